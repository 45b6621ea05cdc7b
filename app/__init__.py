"""mediahook. ``create_app()`` is the web entry point (gunicorn's ``app:create_app()``).

Importing ``app`` loads nothing else: the workers import ``app.core`` and ``app.sources`` without
Flask, the admin API or the console coming along.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """The web app: see ``app.web.factory.create_app``."""
    from app.web.factory import create_app as build

    return build(*args, **kwargs)

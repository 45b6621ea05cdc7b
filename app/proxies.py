"""Trusting X-Forwarded-* only from configured proxies ([web] trusted_proxies). Filled in by issue 4."""

from __future__ import annotations

from flask import Flask

from app.settings import Settings


def init_app(app: Flask, settings: Settings) -> None:
    """Wrap the WSGI app so remote_addr/scheme/host come from trusted proxies' headers only."""

"""The operator console under /console/: server-rendered pages over the same functions as the
admin API (workers.ops, app.dashboard), with a small script for auto-refresh and live tail.

Server-rendered on purpose: no build step, nothing fetched at run time, pages that work without
JavaScript (forms and links), and one place (these views) that decides what is shown, with the
same redaction as the API. The script only re-fetches page fragments on a timer.
"""

from __future__ import annotations

from flask import Flask

from app.console.views import bp


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

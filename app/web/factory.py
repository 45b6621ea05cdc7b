"""Builds the Flask app that vendors, operators and the console call: one per web process."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask

from app import console
from app.admin import api as admin
from app.admin import openapi
from app.core import config as settings_mod
from app.core import logs
from app.core.config import Settings
from app.core.events import EventStore
from app.core.redis import connect
from app.sources import SOURCES
from app.sources.base import hook_path
from app.web import errors, health, metrics, proxies, spool, traffic
from app.web.receive import make_view

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What one web process holds: the settings, the store, and the spool drainer."""

    settings: Settings
    store: EventStore
    drainer: spool.Drainer | None


def create_app(settings: Settings | None = None, *, start_drainer: bool = True, drain_interval: float = 1.0) -> Flask:
    settings = settings or settings_mod.load()
    logs.configure(settings, "web")
    app = Flask(__name__, static_folder=None)
    # One byte over the limit: Werkzeug stops a chunked body at MAX_CONTENT_LENGTH without
    # raising, so read_body needs to see that extra byte to answer 413 instead of storing a cut body.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1

    store = EventStore(connect(settings), settings)
    spool.ensure_dir(settings.spool_dir)
    spool.reap_stale_tmp(settings.spool_dir)
    drainer = spool.Drainer(settings.spool_dir, store, drain_interval).start() if start_drainer else None
    app.extensions["mediahook"] = Runtime(settings, store, drainer)

    for name, source in SOURCES.items():
        if settings.source(name) is None:
            log.warning("source %s has no secret configured: its callbacks are refused with 401", name)
        for endpoint in source.ENDPOINTS:
            view = make_view(source, endpoint, settings, store.ingest)
            app.add_url_rule(hook_path(name, endpoint.path), view_func=view, methods=["POST"])
    app.register_blueprint(health.bp)
    app.register_blueprint(admin.bp)
    console.init_app(app)
    openapi.init_app(app)
    metrics.init_app(app, settings)
    traffic.init_app(app, store.redis, settings)  # inside proxies: sees the client's address
    proxies.init_app(app, settings)
    errors.register(app)
    return app

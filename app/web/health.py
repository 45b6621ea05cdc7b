"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from app.web import spool
from app.web.receive import json_response

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up and serving. Point load balancers here: while Redis is down the spool
    still takes callbacks, so a Redis outage is no reason to take a web host out."""
    return json_response(200, {"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Ready means Redis answers; the spool depth shows what is waiting to drain into it."""
    runtime = current_app.extensions["mediahook"]
    redis_ok = runtime.store.ping()
    doc = {
        "status": "ready" if redis_ok else "unready",
        "redis": "ok" if redis_ok else "unreachable",
        "spool_depth": spool.depth(runtime.settings.spool_dir),
    }
    return json_response(200 if redis_ok else 503, doc)

"""Prometheus metrics at /metrics (multiprocess-safe). Filled in by issue 4."""

from __future__ import annotations

from flask import Flask

from app.settings import Settings


def init_app(app: Flask, settings: Settings) -> None:
    """Register /metrics and the request hooks that count callbacks."""

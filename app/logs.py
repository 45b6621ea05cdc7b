"""Logging set-up for every process (web, worker, scheduler). Filled in by issue 4."""

from __future__ import annotations

from app.settings import Settings


def configure(settings: Settings, component: str) -> None:
    """Configure the root logger for ``component`` ("web", "worker", "cli")."""

"""What a job needs from its process: the settings (loaded once) and the Redis connection."""

from __future__ import annotations

from redis import Redis
from rq import get_current_job

from app.core import config as settings_mod
from app.core.config import Settings

_settings: Settings | None = None


def settings() -> Settings:
    """The worker's settings, from MEDIAHOOK_CONFIG and the environment, loaded on first use."""
    global _settings
    if _settings is None:
        _settings = settings_mod.load()
    return _settings


def configure(value: Settings | None) -> None:
    """Set the settings jobs in this process use (tests, in-process workers)."""
    global _settings
    _settings = value


def redis() -> Redis:
    job = get_current_job()
    if job is None:
        raise RuntimeError("not inside an RQ job")
    return job.connection

"""Worker-side counters kept in Redis (the hash ``mh:metrics``), read back by ``GET /metrics``.

Actions and vendor calls happen in RQ work horses on whatever host runs the worker: counting them
in Redis (one HINCRBY pipeline per action outcome or vendor call) means every web host reports
them for the whole fleet, worker hosts need no exporter, and nothing is lost when a work horse
exits. Label values come from code (action kinds and vendor names), never from input.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis, RedisError

log = logging.getLogger(__name__)

REDIS_KEY = "mh:metrics"  # hash: "<metric>|<label>|..." -> count
VENDOR_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _hincr(redis: Redis, fields: dict[str, int | float]) -> None:
    """Add to counters in ``mh:metrics``; a metrics write never fails the action that makes it."""
    try:
        pipe = redis.pipeline(transaction=False)
        for name, amount in fields.items():
            if isinstance(amount, float):
                pipe.hincrbyfloat(REDIS_KEY, name, amount)
            else:
                pipe.hincrby(REDIS_KEY, name, amount)
        pipe.execute()
    except RedisError as exc:
        log.debug("metrics not recorded: %s", exc)


def count_action(redis: Redis, kind: str, vendor: str, outcome: str, retry_reason: str | None = None, *,
                 pipe: Any = None) -> None:
    """One action attempt ended: succeeded, skipped, retrying (with why) or failed (for good).
    With ``pipe``, the counts go out with the caller's pipeline (its record writes: one round trip)."""
    fields: dict[str, int | float] = {f"action|{vendor}|{kind}|{outcome}": 1}
    if retry_reason:
        fields[f"retry|{vendor}|{kind}|{retry_reason}"] = 1
    if pipe is not None:
        for name, amount in fields.items():
            pipe.hincrby(REDIS_KEY, name, amount)
        return
    _hincr(redis, fields)


def observe_vendor_call(redis: Redis | None, vendor: str, seconds: float, result: str, *, pipe: Any = None) -> None:
    """One HTTP call to a vendor: its latency and result ("2xx", "4xx", "429", "timeout", ...).
    With ``pipe``, the counts go out with the caller's pipeline (its action's outcome)."""
    bucket = next((str(i) for i, bound in enumerate(VENDOR_BUCKETS) if seconds <= bound), "inf")
    if pipe is not None:
        pipe.hincrby(REDIS_KEY, f"call|{vendor}|{result}", 1)
        pipe.hincrby(REDIS_KEY, f"call_le|{vendor}|{bucket}", 1)
        pipe.hincrbyfloat(REDIS_KEY, f"call_sum|{vendor}", seconds)
        return
    _hincr(redis, {f"call|{vendor}|{result}": 1, f"call_le|{vendor}|{bucket}": 1, f"call_sum|{vendor}": seconds})


def count_sweep(redis: Redis, what: str, outcome: str, amount: int = 1) -> None:
    """The sweep (workers/sweep.py) found ``amount`` events or actions with no live job: queued
    them again ("requeued") or, RQ having given their job up, marked them failed ("failed")."""
    _hincr(redis, {f"sweep|{outcome}|{what}": amount})


def retry_reason(error: Any) -> str:
    """Why a transient failure is retried, in a few bounded words."""
    status, code = getattr(error, "status", None), getattr(error, "code", None)
    if not hasattr(error, "transient"):
        return "unexpected"
    if status == 429:
        return "rate_limited"
    if status and status >= 500 and code in (None, ""):
        return "server_error"
    if status is None and code in (None, ""):
        return "network"
    return "vendor_error"

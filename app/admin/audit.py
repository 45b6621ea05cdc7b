"""The audit log: who did what to events and actions (replay, requeue, apply, start), from the
console or the admin API.

Each entry is one log line (logger ``mediahook.audit``) and one item of a bounded Redis list that
the console shows. Writing it never fails the action it records: the log line is written first,
and a Redis error only loses the list item.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from redis import Redis, RedisError

log = logging.getLogger("mediahook.audit")

AUDIT_KEY = "mh:audit"
AUDIT_MAX = 1000  # entries kept; older ones fall off the end
AUDIT_TTL = 90 * 86400  # an idle list expires


def record(redis: Redis, who: str, action: str, via: str, **detail: Any) -> None:
    """Note that ``who`` (a token name) did ``action`` (``replay``, ``requeue``...) through ``via``
    (``console`` or ``api``). ``detail`` holds ids and counts, never secrets."""
    entry = {"at": time.time(), "who": who, "action": action, "via": via, "detail": detail}
    log.info("audit: %s %s via %s %s", who, action, via, json.dumps(detail, separators=(",", ":"), default=str),
             extra={"audit_who": who, "audit_action": action})
    try:
        pipe = redis.pipeline(transaction=False)
        pipe.lpush(AUDIT_KEY, json.dumps(entry, separators=(",", ":"), default=str))
        pipe.ltrim(AUDIT_KEY, 0, AUDIT_MAX - 1)
        pipe.expire(AUDIT_KEY, AUDIT_TTL)
        pipe.execute()
    except RedisError as exc:
        log.warning("audit entry not kept in Redis (%s); the log line above is the record", exc.__class__.__name__)


def recent(redis: Redis, limit: int = 200) -> list[dict[str, Any]]:
    """The newest entries first."""
    return [json.loads(raw) for raw in redis.lrange(AUDIT_KEY, 0, max(0, limit - 1))]

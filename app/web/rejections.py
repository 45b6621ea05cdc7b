"""Refused callbacks (400 / 401 / 413 / 415): why, from where, when. Kept so an operator can see
a secret rotation or a misconfigured proxy at a glance, instead of a bare 401 counter.

``app.web.traffic``'s WSGI wrapper sees each refused answer; ``reason`` makes it a sentence (from the
answer's own JSON, and for a 401 from the source's ``refusal``, the very check the receive path
made, so the reason cannot drift from it; only refused requests ask it twice).
The entries go to Redis from the traffic thread, so the answer never waits on, nor fails with,
this bookkeeping. The list is bounded in
count (``KEEP``) and time (``MAX_AGE``), and each reason is logged once per flush interval with
its count, so the log says it too.

A reason names the check that failed and the field path, never a secret, a signature, a token
or a body value.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Any

from flask import Request
from redis import Redis

from app.core.config import Settings
from app.sources import SOURCES

log = logging.getLogger(__name__)

REJECTED_KEY = "mh:rejected"  # list of JSON entries, newest first
KEEP = 1000
MAX_AGE = 86400.0  # seconds an entry is shown; the list expires after that much quiet
MAX_REASON = 300  # characters of a reason kept

# When the answer says no more (Flask or Werkzeug answered before the view ran).
DEFAULT_REASONS = {400: "bad request", 401: "unauthorized", 405: "method not allowed",
                   413: "body over max_body_bytes", 415: "body is not JSON"}


def auth_reason(source: str, req: Request, settings: Settings) -> str:
    """Which check refused a callback's credentials: the source's own ``refusal`` (app/sources),
    asked again only for a request it refused. Never shows the secret or what was sent."""
    module = SOURCES.get(source)
    return (module.refusal(req, settings) if module else None) or "unauthorized"


def reason(source: str, status: int, answer: bytes, environ: dict, settings: Settings | None) -> str:
    """A refused callback's reason, from the answer's JSON (``message`` and, for a 400, the field
    paths with their messages), or for a 401 from ``auth_reason``."""
    if status == 401 and settings is not None:
        return auth_reason(source, Request(environ), settings)[:MAX_REASON]
    if status == 413:  # Werkzeug's own wording says less
        return DEFAULT_REASONS[413]
    try:
        doc = json.loads(answer)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict) or not isinstance(doc.get("message"), str):
        return DEFAULT_REASONS.get(status, f"HTTP {status}")
    text = doc["message"]
    errors = doc.get("errors")
    if isinstance(errors, dict) and errors:
        text += ": " + "; ".join(f"{path} ({' '.join(map(str, msgs))})" for path, msgs in errors.items())
    return text[:MAX_REASON]


def entry(environ: dict, source: str, status: int, at: float, why: str) -> dict[str, Any]:
    """One refused callback as kept: its path (never the query: it may hold a token)."""
    return {"at": at, "source": source, "path": environ.get("PATH_INFO", ""), "status": status,
            "reason": why, "remote_addr": environ.get("REMOTE_ADDR", "")}


def write(pipe: Any, entries: list[dict[str, Any]]) -> None:
    """Add entries (oldest first) to the list on a pipeline, and log each reason once with its count."""
    if not entries:
        return
    pipe.lpush(REJECTED_KEY, *(json.dumps(e, separators=(",", ":")) for e in entries))
    pipe.ltrim(REJECTED_KEY, 0, KEEP - 1)
    pipe.expire(REJECTED_KEY, int(MAX_AGE))
    counts = Counter((e["source"], e["status"], e["reason"]) for e in entries)
    last_from = {(e["source"], e["status"], e["reason"]): e["remote_addr"] for e in entries}
    for (source, status, reason), n in counts.items():
        log.warning("callbacks refused: %d x %s %s: %s (last from %s)", n, source, status, reason,
                    last_from[(source, status, reason)])


def recent(redis: Redis, limit: int = 200, since: float | None = None) -> list[dict[str, Any]]:
    """Refused callbacks, newest first, no older than MAX_AGE (or ``since``)."""
    oldest = max(time.time() - MAX_AGE, since or 0.0)
    out = []
    for raw in redis.lrange(REJECTED_KEY, 0, KEEP - 1):
        doc = json.loads(raw)
        if doc["at"] < oldest:
            break  # newest first: the rest are older still
        out.append(doc)
        if len(out) >= limit:
            break
    return out


def by_reason(redis: Redis, since: float) -> dict[str, int]:
    """How many callbacks were refused since ``since``, by "source status: reason"."""
    counts: Counter[str] = Counter()
    for doc in recent(redis, limit=KEEP, since=since):
        counts[f"{doc['source']} {doc['status']}: {doc['reason']}"] += 1
    return dict(counts.most_common())

"""Refused callbacks (400 / 401 / 413 / 415): why, from where, when. Kept so an operator can see
a secret rotation or a misconfigured proxy at a glance, instead of a bare 401 counter.

``app.traffic``'s WSGI wrapper sees each refused answer; ``reason`` makes it a sentence (from the
answer's own JSON, and for a 401 from ``auth_reason``, which re-runs the source's checks to say
which one failed: only refused requests pay for that). The entries go to Redis from the traffic
thread, so the answer never waits on, nor fails with, this bookkeeping. The list is bounded in
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
from urllib.parse import urlsplit

from flask import Request
from redis import Redis

from app.settings import Settings
from app.sources import metastudio
from app.sources.base import secret_equals

log = logging.getLogger(__name__)

REJECTED_KEY = "mh:rejected"  # list of JSON entries, newest first
KEEP = 1000
MAX_AGE = 86400.0  # seconds an entry is shown; the list expires after that much quiet
MAX_REASON = 300  # characters of a reason kept

# When the answer says no more (Flask or Werkzeug answered before the view ran).
DEFAULT_REASONS = {400: "bad request", 401: "unauthorized", 405: "method not allowed",
                   413: "body over max_body_bytes", 415: "body is not JSON"}


def auth_reason(source: str, req: Request, settings: Settings) -> str:
    """Which check refused a callback's credentials: mirrors ``authenticate`` of the source
    (app/sources), run only for a request it refused. Never shows the secret or what was sent."""
    if source == "cdnetworks":
        src = settings.cdnetworks
        if src is None:
            return "no [sources.cdnetworks] token configured"
        return "token missing from the URL" if not req.args.get("token") else "wrong token"
    ms = settings.metastudio
    if ms is None:
        return "no [sources.metastudio] configured"
    if ms.auth_type == "NONE":
        given = req.args.get("token")
        return "token missing from the URL" if not given else (
            "wrong token" if not secret_equals(given, ms.token) else "unauthorized")
    where = "query (hwSecret, hwTime)" if ms.auth_type == "MSS_A" else "headers (x-hw-mss-secret, x-hw-mss-time)"
    if ms.auth_type == "MSS_A":
        given, hw_time = req.args.get("hwSecret"), req.args.get("hwTime")
    else:
        given, hw_time = req.headers.get("x-hw-mss-secret"), req.headers.get("x-hw-mss-time")
    if not given or not hw_time:
        return f"signature missing: auth_type {ms.auth_type} expects it in the {where}"
    try:
        sent = int(hw_time, 16) if 1 <= len(hw_time) <= 16 else None
    except ValueError:
        sent = None
    if sent is None:
        return "signed time is not hex Unix seconds"
    skew = time.time() - sent
    if skew > ms.tolerance_seconds:
        return f"stale signed time: sent {skew:.0f}s ago, tolerance {ms.tolerance_seconds}s (replay, or a slow clock)"
    if -skew > ms.tolerance_seconds:
        return f"signed time in the future by {-skew:.0f}s, tolerance {ms.tolerance_seconds}s (a fast clock)"
    if settings.public_base_url:
        parts = urlsplit(settings.public_base_url)
        host, path = parts.netloc, parts.path.rstrip("/") + req.path
    else:
        host, path = req.host, req.path
    uri = metastudio.canonical_uri(host, path, req.query_string.decode("latin-1"))
    if ms.key and secret_equals(given.lower(), metastudio.sign(ms.key, uri, hw_time)):
        return "unauthorized"  # the signature holds now: refused for a reason this does not know
    return (f"signature mismatch: wrong key, or the vendor signed another URL than {host}{path} "
            "(check public_base_url, and the Host / X-Forwarded-Host the proxy passes)")


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

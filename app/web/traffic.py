"""Callbacks per minute by source and outcome, for the console's chart, kept in Redis so every
web process and host adds to the same figures; plus the refused callbacks (app.rejections).

Cheap on the hot path: a callback costs a dict increment in memory (and, when refused, a list
append). A background thread per web process adds the counts to Redis every ``FLUSH_SECONDS``
in one pipeline (HINCRBY on ``mh:traffic:<minute>``, a hash per minute that expires after
``KEEP_SECONDS``) and writes the refused ones. The thread runs only while there is something
to write, and stops after a quiet spell. What a process holds when it dies unflushed (at most
``FLUSH_SECONDS`` of counts) is lost: these are figures for people, not accounts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from redis import Redis, RedisError

from app.core.config import Settings
from app.core.logs import CALLBACK_KEY
from app.sources import hook_routes
from app.web import rejections

log = logging.getLogger(__name__)

TRAFFIC_PREFIX = "mh:traffic:"  # + minute number (Unix seconds // 60): hash "source|outcome" -> count
KEEP_SECONDS = 2 * 3600
FLUSH_SECONDS = 2.0
IDLE_FLUSHES = 30  # empty flushes before the thread stops (a new callback starts it again)
MAX_PENDING_REJECTED = 1000  # kept in memory while Redis is down; older ones are dropped
REFUSED = frozenset((400, 401, 405, 413, 415))


def outcome(status: int, noted: tuple[str, str, str] | None) -> str:
    """What became of a callback, as app.web.metrics counts it."""
    if status == 200 and noted:
        return noted[2]
    if status in REFUSED:
        return "rejected"
    return "unavailable" if status == 503 else "error"


class Tally:
    """This process's counts and refused callbacks not yet in Redis, and the thread that writes them."""

    def __init__(self, redis: Redis, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.redis = redis
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._counts: dict[tuple[int, str, str], int] = {}
        self._rejected: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    def add(self, source: str, status: int, environ: dict, now: float, why: str | None = None) -> None:
        """Count one callback; ``why`` (a refused one's reason) also keeps it in the refused list."""
        if self._stopped.is_set():
            return
        key = (int(now // 60), source, outcome(status, environ.get(CALLBACK_KEY)))
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            if why is not None:
                self._rejected.append(rejections.entry(environ, source, status, now, why))
                del self._rejected[:-MAX_PENDING_REJECTED]
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mediahook-traffic", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        idle = 0
        while not self._stopped.wait(self.flush_seconds):
            try:
                wrote = self.flush()
            except Exception:  # a bug here must not end the counting for good
                log.exception("traffic: flush failed")
                wrote = False
            idle = 0 if wrote else idle + 1
            with self._lock:
                if idle >= IDLE_FLUSHES and not self._counts and not self._rejected:
                    self._thread = None
                    return

    def stop(self) -> None:
        """Stop counting and drop what is held (an app being thrown away: tests). Returns once a
        flush under way has ended, so nothing is written afterwards."""
        self._stopped.set()
        with self._lock:
            thread, self._counts, self._rejected = self._thread, {}, []
        if isinstance(thread, threading.Thread):
            thread.join(timeout=10)

    def flush(self) -> bool:
        """Write what is held to Redis; on a Redis error keep it for the next try. True if anything was written."""
        with self._lock:
            counts, self._counts = self._counts, {}
            rejected, self._rejected = self._rejected, []
        if not counts and not rejected:
            return False
        try:
            pipe = self.redis.pipeline(transaction=False)
            for minute in {m for m, _, _ in counts}:
                for (m, source, result), n in counts.items():
                    if m == minute:
                        pipe.hincrby(TRAFFIC_PREFIX + str(minute), f"{source}|{result}", n)
                pipe.expire(TRAFFIC_PREFIX + str(minute), KEEP_SECONDS)
            rejections.write(pipe, rejected)
            pipe.execute()
            return True
        except RedisError as exc:
            log.debug("traffic figures not written yet: %s", exc.__class__.__name__)
            with self._lock:
                for key, n in counts.items():
                    self._counts[key] = self._counts.get(key, 0) + n
                self._rejected[:0] = rejected
                del self._rejected[:-MAX_PENDING_REJECTED]
            return False


class TrafficMiddleware:
    """WSGI wrapper: notes each callback's source and answer in the Tally. A refused answer (a
    small JSON error) is read here to say why; an accepted one passes through untouched."""

    def __init__(self, wsgi_app: Callable, routes: dict[str, str], tally: Tally, settings: Settings | None) -> None:
        self.wsgi_app = wsgi_app
        self.routes = routes  # PATH_INFO -> source
        self.tally = tally
        self.settings = settings

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        source = self.routes.get(environ.get("PATH_INFO"))
        if source is None:
            return self.wsgi_app(environ, start_response)
        status = 500

        def capture(line: str, headers: list, exc_info: Any = None) -> Callable:
            nonlocal status
            status = int(line[:3])
            return start_response(line, headers, exc_info)

        answer = self.wsgi_app(environ, capture)
        why = None
        try:
            if status in REFUSED:
                body = b"".join(answer)
                if hasattr(answer, "close"):
                    answer.close()
                answer = [body]
                why = rejections.reason(source, status, body, environ, self.settings)
        except Exception:  # bookkeeping must never fail a callback
            log.exception("traffic: a refused callback's reason could not be told")
            why = why or f"HTTP {status}"
        try:
            self.tally.add(source, status, environ, time.time(), why)
        except Exception:
            log.exception("traffic: a callback could not be counted")
        return answer


def per_minute(redis: Redis, minutes: int = 60, now: float | None = None) -> list[dict[str, Any]]:
    """The last ``minutes`` minutes, oldest first: {"minute": start (Unix seconds), "counts":
    {"source|outcome": n}}; minutes with nothing have empty counts."""
    last = int((time.time() if now is None else now) // 60)
    span = range(last - minutes + 1, last + 1)
    pipe = redis.pipeline(transaction=False)
    for minute in span:
        pipe.hgetall(TRAFFIC_PREFIX + str(minute))
    return [{"minute": minute * 60, "counts": {k.decode(): int(v) for k, v in raw.items()}}
            for minute, raw in zip(span, pipe.execute(), strict=True)]


def init_app(app: Any, redis: Redis, settings: Settings) -> Tally:
    """Wrap the app so callbacks are counted; returns the Tally (tests flush it by hand)."""
    routes = hook_routes()
    tally = Tally(redis)
    app.wsgi_app = TrafficMiddleware(app.wsgi_app, routes, tally, settings)
    app.extensions["mediahook.traffic"] = tally
    return tally

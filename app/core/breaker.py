"""A circuit breaker in front of the web side's Redis writes, so a hung Redis costs one short
timeout, not one per callback.

Redis that refuses connections fails in microseconds, but one that hangs (SIGSTOP, a stuck
fsync, a host gone without a RST) makes every command wait for the socket timeout
(the ingest client's, ``redis.ingest_timeout``). Behind sync
gunicorn workers each of those waits also delays every request queued behind it, so a vendor
with a 5 s timeout gives up. After one timeout the breaker opens: callbacks
go straight to the spool (still answered 200) and /readyz says not ready. A thread
pings Redis every ``PROBE_SECONDS`` and closes the breaker on the first answer; the spool
drainer then moves what was spooled, through the same idempotent ingest script, so an event
whose timed-out write did reach Redis after all is recorded once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

PROBE_SECONDS = 0.5
# What opens the breaker: a timeout (reading, or connecting to a host that vanished). A refused
# connection fails in microseconds by itself, and a ResponseError is an answer: neither opens it.
TRIPPING_ERRORS = (RedisTimeoutError,)


class CircuitOpen(RedisConnectionError):
    """Raised instead of a Redis call while the breaker is open: callers spool, as for any
    connection error."""


class Breaker:
    """Closed (calls go to Redis) or open (they fail at once) until ``probe`` succeeds."""

    def __init__(self, probe: Callable[[], object], probe_seconds: float = PROBE_SECONDS) -> None:
        self._probe = probe
        self.probe_seconds = probe_seconds
        self._lock = threading.Lock()
        self.opened_at: float | None = None
        self._prober: threading.Thread | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def check(self) -> None:
        """Raise CircuitOpen while open."""
        if self.opened_at is not None:
            raise CircuitOpen("Redis did not answer recently; waiting for a probe to succeed")

    def trip(self, exc: BaseException | None = None) -> None:
        """Open (if closed) and make sure a probe thread is running."""
        with self._lock:
            if self.opened_at is None:
                self.opened_at = time.monotonic()
                log.warning("Redis not answering (%s): callbacks go to the spool until it answers again",
                            exc.__class__.__name__ if exc else "probe")
            if self._prober is None:  # the prober clears this under the lock as it ends
                self._prober = threading.Thread(target=self._probe_until_closed, name="mediahook-redis-probe",
                                                daemon=True)
                self._prober.start()

    def close(self) -> None:
        with self._lock:
            if self.opened_at is not None:
                log.warning("Redis answers again after %.1f s: callbacks go to Redis, the spool drains",
                            time.monotonic() - self.opened_at)
            self.opened_at = None

    def _probe_until_closed(self) -> None:
        while True:
            with self._lock:
                if self.opened_at is None:
                    self._prober = None
                    return
            time.sleep(self.probe_seconds)
            try:
                self._probe()
            except Exception:  # still down or hung (the probe's own timeout bounds the wait)
                continue
            self.close()

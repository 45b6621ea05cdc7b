"""One lock helper for every "one at a time" section of the workers (converter, KooPhone, transcode).

The lock lives in Redis (so it holds across hosts) with a short TTL that a thread renews while
the body runs (one thread per process, for every lock it holds). A worker killed mid-call
(SIGKILL, OOM, a lost host) stops renewing, so its lock is gone within ``ttl`` seconds instead of
blocking the next attempt for the length of the longest call it might have made.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis import Redis
from redis.exceptions import LockError, RedisError

log = logging.getLogger(__name__)

LOCK_PREFIX = "mh:lock:"
DEFAULT_TTL = 5.0


class Busy(RuntimeError):
    """Another holder kept the lock for longer than we were willing to wait (retried like any error)."""


class _Renewer:
    """One thread per process renews every lock the process holds, each every ``ttl / 3``:
    a thread started per lock cost more than the rest of a short hold."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._held: dict[int, tuple[Any, float, str]] = {}  # id -> (lock, every, name)
        self._due: dict[int, float] = {}
        self._pid: int | None = None  # the thread does not survive a fork: one per process

    def add(self, lock: Any, every: float, name: str) -> int:
        token = id(lock)
        with self._cv:
            self._held[token] = (lock, every, name)
            self._due[token] = time.monotonic() + every
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="mediahook-lock-renewer", daemon=True).start()
            self._cv.notify()
        return token

    def remove(self, token: int) -> None:
        """After this, the lock is never renewed again (a renewal under way has ended)."""
        with self._cv:
            self._held.pop(token, None)
            self._due.pop(token, None)

    def _run(self) -> None:
        with self._cv:
            while True:
                now = time.monotonic()
                for token, due in list(self._due.items()):
                    if due <= now:
                        lock, every, name = self._held[token]
                        try:
                            lock.reacquire()  # back to the full TTL
                            self._due[token] = now + every
                        except (LockError, RedisError) as exc:
                            # Lost (expired during a stall, or Redis away): the body goes on; what it
                            # writes is converged again by the next attempt, which re-reads the state.
                            log.warning("lock %s could not be renewed: %s", name, exc)
                            self._held.pop(token, None)
                            self._due.pop(token, None)
                self._cv.wait(max(0.0, min(self._due.values()) - time.monotonic()) if self._due else None)


_renewer = _Renewer()


def _after_fork() -> None:
    # A forked job process starts with no locks held, and must not inherit a condition that
    # another thread of its parent held at the fork.
    global _renewer
    _renewer = _Renewer()


os.register_at_fork(after_in_child=_after_fork)


@contextmanager
def locked(redis: Redis, name: str, *, wait: float, ttl: float = DEFAULT_TTL) -> Iterator[None]:
    """Hold ``mh:lock:<name>`` while the body runs; wait up to ``wait`` seconds for it, else ``Busy``.

    ``ttl`` bounds how long a dead holder blocks others; the process's renewing thread keeps a live
    holder's lock for as long as its body runs.
    """
    key = LOCK_PREFIX + name
    lock = redis.lock(key, timeout=ttl, blocking_timeout=wait, thread_local=False)
    if not lock.acquire():
        raise Busy(f"{name} is held by another attempt (waited {wait:g} s)")
    token = _renewer.add(lock, ttl / 3, key)
    try:
        yield
    finally:
        _renewer.remove(token)
        try:
            lock.release()
        except LockError:
            pass  # expired while we worked: whoever holds it now re-reads the state anyway

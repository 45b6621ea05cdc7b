"""One lock helper for every "one at a time" section of the workers (converter, KooPhone, transcode).

The lock lives in Redis (so it holds across hosts) with a short TTL that a thread renews while
the body runs. A worker killed mid-call (SIGKILL, OOM, a lost host) stops renewing, so its lock
is gone within ``ttl`` seconds instead of blocking the next attempt for the length of the
longest call it might have made.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import LockError, RedisError

log = logging.getLogger(__name__)

LOCK_PREFIX = "mh:lock:"
DEFAULT_TTL = 5.0


class Busy(RuntimeError):
    """Another holder kept the lock for longer than we were willing to wait (retried like any error)."""


def _renew(lock, every: float, stop: threading.Event, name: str) -> None:
    while not stop.wait(every):
        try:
            lock.reacquire()  # back to the full TTL
        except (LockError, RedisError) as exc:
            # Lost (expired during a stall, or Redis away): the body goes on; what it writes is
            # converged again by the next attempt, which re-reads the state.
            log.warning("lock %s could not be renewed: %s", name, exc)
            return


@contextmanager
def locked(redis: Redis, name: str, *, wait: float, ttl: float = DEFAULT_TTL) -> Iterator[None]:
    """Hold ``mh:lock:<name>`` while the body runs; wait up to ``wait`` seconds for it, else ``Busy``.

    ``ttl`` bounds how long a dead holder blocks others; the renewing thread keeps a live
    holder's lock for as long as its body runs.
    """
    key = LOCK_PREFIX + name
    lock = redis.lock(key, timeout=ttl, blocking_timeout=wait, thread_local=False)
    if not lock.acquire():
        raise Busy(f"{name} is held by another attempt (waited {wait:g} s)")
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(lock, ttl / 3, stop, key), name=f"renew {key}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        try:
            lock.release()
        except LockError:
            pass  # expired while we worked: whoever holds it now re-reads the state anyway

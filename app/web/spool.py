"""The on-disk spool: where an event goes when Redis cannot take it, so a 200 is never a lie.

One file per event, written to a temporary name, fsync'd, renamed into place and the folder
fsync'd, so a file either holds a whole event or is not there. A drainer thread in every web
process moves spooled events into Redis once it answers again, through the same ingest script,
so delivery dedup still applies and a file drained twice (a crash between the Redis write and
the unlink, or two processes racing) is recorded once.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import threading
import time
from dataclasses import asdict

from redis import RedisError

from app.core.events import Event, EventStore

log = logging.getLogger(__name__)

SUFFIX = ".event.json"
TMP_PREFIX = ".tmp-"


def ensure_dir(spool_dir: str) -> None:
    os.makedirs(spool_dir, exist_ok=True)


def write(spool_dir: str, event: Event) -> None:
    """Durably store one event. Raises OSError if it cannot (disk full, read-only, ...)."""
    doc = asdict(event)
    doc["body"] = base64.b64encode(event.body).decode("ascii")
    data = json.dumps(doc, separators=(",", ":")).encode()
    final = os.path.join(spool_dir, event.id + SUFFIX)
    tmp = os.path.join(spool_dir, TMP_PREFIX + event.id)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, final)
    dir_fd = os.open(spool_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read(path: str) -> Event:
    """The spooled event; fields a file written by an older version lacks take their defaults."""
    with open(path, "rb") as fh:
        doc = json.load(fh)
    doc["body"] = base64.b64decode(doc["body"])
    return Event(**doc)


def pending(spool_dir: str) -> list[str]:
    """Spooled event files, oldest first (event ids sort by time)."""
    try:
        names = [e.name for e in os.scandir(spool_dir) if e.name.endswith(SUFFIX)]
    except FileNotFoundError:
        return []
    return [os.path.join(spool_dir, n) for n in sorted(names)]


def depth(spool_dir: str) -> int:
    return len(pending(spool_dir))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def drain_once(spool_dir: str, store: EventStore) -> int:
    """Move every spooled event into Redis; returns how many files were handled.

    Files go in received-time order (their names lead with the event id), and a pass never
    overtakes one: it stops at the first Redis error, and at a file another process holds (the
    rest wait for the next pass). Otherwise a vendor's re-delivery, spooled after its original,
    could reach Redis first while the other process waits on a slow Redis, and be recorded in
    its place with a later time. Each file is held under an exclusive flock while it is
    ingested, so two processes never work on the same file at once; the lock dies with its
    process, so a crash leaves no stale claim behind.
    """
    handled = 0
    for path in pending(spool_dir):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # another process drained it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                break  # another process is ingesting it: what comes after it waits for it
            if os.fstat(fd).st_nlink == 0:
                continue  # drained and unlinked while we waited for the lock
            try:
                event = read(path)
            except (ValueError, KeyError, TypeError) as exc:
                # Not one of ours, or damaged: keep it aside for a human, never drop it.
                log.error("spool file %s is unreadable (%s); moved aside", path, exc)
                os.rename(path, path + ".bad")
                continue
            try:
                # Its id was the answer: a duplicate stays findable under it (status "duplicate").
                created, event_id = store.ingest(event, keep_duplicate=True)
            except RedisError as exc:
                # The cause in the line (refused, auth, OOM, READONLY...): what the runbook greps for.
                log.info("spool drain paused, Redis not answering: %s: %s", exc.__class__.__name__, exc)
                break
            log.info("spooled event %s drained (%s)", event.id, "queued" if created else f"duplicate of {event_id}")
            _unlink(path)
            handled += 1
        finally:
            os.close(fd)
    return handled


class Drainer:
    """A daemon thread that drains the spool whenever it has files and Redis answers."""

    def __init__(self, spool_dir: str, store: EventStore, interval: float = 1.0) -> None:
        self.spool_dir = spool_dir
        self.store = store
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mediahook-spool-drainer", daemon=True)

    def start(self) -> Drainer:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        delay = self.interval
        while not self._stop.wait(delay):
            try:
                if self.store.breaker.is_open or not pending(self.spool_dir):
                    # While the breaker is open its probe watches Redis: look again soon, at no cost
                    # (not even listing the spool, which grows by every callback of the outage).
                    delay = self.interval
                    continue
                before = depth(self.spool_dir)
                drain_once(self.spool_dir, self.store)
                # Back off while Redis stays down; go back to the short interval once it moves.
                delay = self.interval if depth(self.spool_dir) < before else min(delay * 2, 5 * self.interval)
            except Exception:  # the drainer must outlive any one bad pass
                log.exception("spool drain pass failed")
                delay = min(delay * 2, 5 * self.interval)


def reap_stale_tmp(spool_dir: str, older_than: float = 3600.0) -> None:
    """Remove half-written temp files left by a crash mid-write (never acknowledged)."""
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(spool_dir))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.startswith(TMP_PREFIX) and entry.stat().st_mtime < cutoff:
            _unlink(entry.path)

"""Group commit: concurrent requests in one web process share their Redis round trip.

The round trip is most of a callback's cost (measured: ~110 µs of client CPU and ~190 µs of
wall time alone, ~35 and ~50 per event in a pipeline of 8). A request that finds no write in
flight sends its own event at once (no added latency when idle); requests that arrive while
a write is in flight queue up, and the next of them sends them all in one pipeline. Each
event still gets its own atomic script call and its own answer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from app.core.events import Event, EventStore


@dataclass
class _Slot:
    event: Event
    result: tuple[bool, str] | Exception | None = None
    done: bool = False


@dataclass
class IngestBatcher:
    store: EventStore
    max_batch: int = 64
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _pending: list[_Slot] = field(default_factory=list)
    _busy: bool = False

    def ingest(self, event: Event) -> tuple[bool, str]:
        """Like ``EventStore.ingest``: (created, event_id), or raises the Redis error."""
        slot = _Slot(event)
        with self._cond:
            self._pending.append(slot)
            while self._busy and not slot.done:
                self._cond.wait()
            if not slot.done:
                self._busy = True
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        if not slot.done:
            self._send(batch)
        if isinstance(slot.result, Exception):
            raise slot.result
        assert slot.result is not None
        return slot.result

    def _send(self, batch: list[_Slot]) -> None:
        try:
            results: list = self.store.ingest_many([s.event for s in batch])
        except Exception as exc:  # the round trip failed: every event in it gets the error
            results = [exc] * len(batch)
        with self._cond:
            for s, result in zip(batch, results, strict=True):
                s.result, s.done = result, True
            self._busy = False
            self._cond.notify_all()

"""The simulator's in-memory state: config, the one seeded RNG, recorded calls, vendor data.

Everything mutable sits behind one lock: the werkzeug server is threaded and MetaStudio's
callbacks run in their own threads, and a single lock keeps the reasoning simple.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from typing import Any

from flask import current_app

EXTENSION = "simulators"


class Sim:
    """State shared by every vendor blueprint and the control API of one simulator app."""

    def __init__(self, config: dict[str, Any], faults: dict[str, Any]) -> None:
        self.lock = threading.RLock()
        self.config = config
        self.seed: int = config["seed"] if config["seed"] is not None else random.SystemRandom().randrange(2**32)
        self.rng = random.Random(self.seed)
        self.faults: dict[str, Any] = faults
        self.remaining: dict[str, int] = {}  # "vendor[.endpoint]:key" -> calls still to fail ("times")
        self.calls: list[dict[str, Any]] = []
        self.seq = 0
        self.data: dict[str, dict[str, Any]] = {}  # vendor -> its own records (tasks, converters, ...)
        self.generation = 0  # bumped by reset: background work of an older generation stops
        self.stopping = threading.Event()

    def vendor_data(self, vendor: str) -> dict[str, Any]:
        """The vendor's own mutable records; call with the lock held."""
        return self.data.setdefault(vendor, {})

    def reset(self, remaining: dict[str, int]) -> None:
        """Forget calls and vendor data, re-seed the RNG, re-arm the `times` counters (``remaining``)."""
        with self.lock:
            self.calls.clear()
            self.data.clear()
            self.rng.seed(self.seed)
            self.remaining = remaining
            self.generation += 1

    def record(self, vendor: str, endpoint: str, **fields: Any) -> dict[str, Any]:
        """Append a call record (in arrival order) and return it for later completion."""
        with self.lock:
            self.seq += 1
            call = {"seq": self.seq, "vendor": vendor, "endpoint": endpoint, "time": time.time(), **fields}
            self.calls.append(call)
            overflow = len(self.calls) - self.config["max_calls"]
            if overflow > 0:
                del self.calls[:overflow]
            return call

    def update(self, call: dict[str, Any], **fields: Any) -> None:
        with self.lock:
            call.update(fields)

    def list_calls(self, vendor: str | None = None, endpoint: str | None = None, since: int = 0) -> list[dict]:
        with self.lock:
            return copy.deepcopy([c for c in self.calls
                                  if c["seq"] > since
                                  and (vendor is None or c["vendor"] == vendor)
                                  and (endpoint is None or c["endpoint"] == endpoint)])


def get_sim() -> Sim:
    return current_app.extensions[EXTENSION]

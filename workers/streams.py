"""Every state of every live stream, in the vendor's order, so actions converge on the right one.

A stream is what MetaStudio streams: one live job's output in one room (room + job + output
URL). Its states arrive late, twice and out of order, and event jobs run out of order, so every
state is kept (not just "the latest") and ordered when read:

* **order** = (vendor's signed send time, else our receive time; receive time; event id). The
  signed time (``sent_at``) is whole seconds, so states signed in one second keep their arrival
  order.
* **current job** of a room (or of an output URL) = the job whose *first* state is the latest:
  a new job supersedes the previous one for good, so the previous job's END, however late it is
  delivered, moves nothing.
* **target** of a binding = the latest state of the current job among the states that mean
  something to that binding (CONNECTED/DISCONNECTED/END for a converter, the ``on_state`` keys
  for cloud phones); states that mean nothing (RECONNECTING for a converter) are passed over.

A repeated state (a re-delivery) is just one more entry with the same state; reconcilers
compare what is applied with the target, so it leads to no second call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Container, Mapping
from typing import Any

from redis import Redis

STATES_PREFIX = "mh:stream-states:"
STREAMS_INDEX = "mh:streams"
STREAM_TTL = 30 * 86400
MAX_STREAMS = 10000  # listed by list_streams; older ones drop out of the index
MAX_STATES = 1000  # per room / output URL: a week of reconnects, far more than any reconcile needs


def stream_ref(room_id: str | None = None, output_url: str | None = None) -> str:
    """The key a scope's states are kept under: its room id, or a digest of its output URL."""
    if room_id:
        return room_id
    return "url-" + hashlib.sha256((output_url or "").encode()).hexdigest()[:16]


def order_time(received_at: float, sent_at: float | None) -> float:
    """When a live event happened, for ordering: the vendor's signed time, else our receive time."""
    return sent_at if sent_at is not None else received_at


def record_state(redis: Redis, *, room_id: str, job_id: str, output_url: str, state: str, event_id: str,
                 received_at: float, sent_at: float | None) -> None:
    """Keep one state under its room and its output URL (idempotent: a replay adds nothing)."""
    at = order_time(received_at, sent_at)
    entry = json.dumps({"event_id": event_id, "state": state, "room_id": room_id, "job_id": job_id,
                        "output_url": output_url, "received_at": received_at, "sent_at": sent_at, "at": at},
                       sort_keys=True)
    pipe = redis.pipeline()
    for ref in (room_id, stream_ref(output_url=output_url)):
        key = STATES_PREFIX + ref
        pipe.zadd(key, {entry: at})
        pipe.zremrangebyrank(key, 0, -MAX_STATES - 1)
        pipe.expire(key, STREAM_TTL)
    pipe.zadd(STREAMS_INDEX, {json.dumps([room_id, job_id, output_url]): at}, gt=True)
    pipe.zremrangebyrank(STREAMS_INDEX, 0, -MAX_STREAMS - 1)
    pipe.execute()


def order_key(entry: dict[str, Any]) -> tuple[float, float, str]:
    return entry["at"], entry["received_at"], entry["event_id"]


# Parsed entries by their stored bytes: a room's list is read several times per event (planning,
# then before and after each vendor call) and grows to MAX_STATES, so parsing it again each time
# was most of an event's CPU. An entry never changes once written (a new state is a new member),
# so the parse can be kept; bounded, and shared: callers read entries, never change them.
_PARSED: dict[bytes, tuple[tuple[float, float, str], dict[str, Any]]] = {}
PARSED_MAX = 20000


def _parsed(member: bytes) -> tuple[tuple[float, float, str], dict[str, Any]]:
    found = _PARSED.get(member)
    if found is None:
        entry = json.loads(member)
        if len(_PARSED) >= PARSED_MAX:
            _PARSED.clear()
        found = _PARSED[member] = (order_key(entry), entry)
    return found


def states(redis: Redis, ref: str) -> list[dict[str, Any]]:
    """Every state kept for a room (or ``url-…`` ref), oldest first in stream order. The entries
    are shared with later reads: read them, do not change them."""
    pairs = sorted(map(_parsed, redis.zrange(STATES_PREFIX + ref, 0, -1)), key=_first)
    return [entry for _, entry in pairs]


def _first(pair: tuple[Any, Any]) -> Any:
    return pair[0]


def current_job(entries: list[dict[str, Any]]) -> str | None:
    """The job whose first state is the latest (entries in stream order)."""
    # In stream order, the job seen first last is the one whose first state is the latest.
    seen: set[str] = set()
    current = None
    for entry in entries:
        job = entry["job_id"]
        if job not in seen:
            seen.add(job)
            current = job
    return current


def target(entries: list[dict[str, Any]], meaningful: Container[str] | None = None) -> dict[str, Any] | None:
    """The latest state of the current job that means something to a binding (any state, when
    ``meaningful`` is None), or None."""
    job = current_job(entries)
    return next((e for e in reversed(entries)
                 if e["job_id"] == job and (meaningful is None or e["state"] in meaningful)), None)


def latest(redis: Redis, ref: str) -> dict[str, Any] | None:
    """The latest state of the current job of a room (or ``url-…`` ref)."""
    return target(states(redis, ref))


CONVERGE_ROUNDS = 5


def converge(redis: Redis, ref: str, targets: Mapping[str, Any], apply: Callable[[dict[str, Any]], dict | None],
             unasked: Callable[[str], Exception]) -> dict[str, Any]:
    """Bring something (a converter, a batch of phones) to what the stream's target state asks
    for, and check the target did not change meanwhile: a state recorded during the vendor call
    is applied by the next round, so the effect ends on the latest state, not the one read first.

    ``apply(stream)`` acts for that target entry and returns its result, or None to go round
    again (what it acted on was gone); ``unasked(state)`` is raised when no state asks anything.
    """
    for _ in range(CONVERGE_ROUNDS):
        stream = target(states(redis, ref), targets)
        if stream is None:
            now = latest(redis, ref)
            raise unasked(now["state"] if now else "unknown")
        result = apply(stream)
        if result is None:
            continue
        after = target(states(redis, ref), targets)
        if after and after["event_id"] == stream["event_id"]:
            return {**result, "state": stream["state"], "event_id": stream["event_id"]}
    raise RuntimeError("stream state kept changing while it was applied; retrying")


def stream_history(redis: Redis, room_id: str, job_id: str) -> list[dict[str, Any]]:
    """One job's states in a room (all its outputs), in stream order."""
    return [e for e in states(redis, room_id) if e["job_id"] == job_id]


def list_streams(redis: Redis, limit: int = 100) -> list[dict[str, Any]]:
    """The streams with the latest states, newest first: room_id, job_id, output_url, state, at,
    and ``current`` (whether its job is its room's current job)."""
    out = []
    by_room: dict[str, list[dict[str, Any]]] = {}
    for member in redis.zrevrange(STREAMS_INDEX, 0, limit - 1):
        room_id, job_id, output_url = json.loads(member)
        if room_id not in by_room:
            by_room[room_id] = states(redis, room_id)
        entries = by_room[room_id]
        mine = [e for e in entries if e["job_id"] == job_id and e["output_url"] == output_url]
        if not mine:
            continue  # its states expired or were trimmed
        last = mine[-1]
        out.append({"room_id": room_id, "job_id": job_id, "output_url": output_url, "state": last["state"],
                    "at": last["at"], "current": current_job(entries) == job_id})
    return out

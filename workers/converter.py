"""Forward the drone feed while the show is live: make a FlightHub converter match its stream.

``[[flighthub.bindings]]`` ties a MetaStudio room (or output URL) to a converter. Each stream
state event queues a reconcile; the reconcile does not act on its event's state but on the
binding's *target*: the latest state of the room's current job that implies something here
(CONNECTED → on, DISCONNECTED/END → off; CONNECTING and RECONNECTING are passed over, see
``workers.streams``). It PUTs ``auto_push_stream`` unless what we know was applied already
matches, then re-reads the target and goes again if it moved meanwhile. What was applied is
marked unknown before each PUT, so an answer lost after FlightHub acted is never trusted.
A converter deleted at FlightHub is re-created (``create`` bindings) or fails visibly (a fixed
``converter_id``). A lock per binding keeps two reconciles of one stream from running at once,
on one host or many.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis import Redis

from app.core.config import Settings
from app.core.vendor_config import ConverterBinding, FlightHub
from workers import actions, streams
from workers.actions import CONVERTER_RECONCILE, Skip
from workers.clients import flighthub
from workers.clients.http import VendorError
from workers.streams import stream_ref

DESIRED = {"CONNECTED": True, "DISCONNECTED": False, "END": False}
CONVERTER_PREFIX = "mh:converter:"
CREATED_PREFIX = "mh:converter-binding:"
LOCK_NAME = "converter:"  # mh:lock:converter:<binding>

log = logging.getLogger(__name__)


def binding_key(binding: ConverterBinding) -> str:
    return "room-" + binding.room_id if binding.room_id else stream_ref(output_url=binding.output_url)


def binding_ref(binding: ConverterBinding) -> str:
    """The scope whose states a binding follows: its room, or its output URL."""
    return stream_ref(binding.room_id, binding.output_url)


def bindings_for(cfg: FlightHub, room_id: str, output_url: str) -> list[ConverterBinding]:
    return [b for b in cfg.bindings if (b.room_id and b.room_id == room_id)
            or (b.output_url and b.output_url == output_url)]


def _binding(cfg: FlightHub, key: str) -> ConverterBinding | None:
    return next((b for b in cfg.bindings if binding_key(b) == key), None)


def plan(redis: Redis, settings: Settings, event_id: str, msg: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Queue a reconcile of every converter bound to this stream, unless the event's job is not
    its scope's current job (then it moves nothing)."""
    if settings.flighthub is None:
        return [], ["[flighthub] is not configured: no converter switching"]
    bindings = bindings_for(settings.flighthub, msg["room_id"], msg["output_url"])
    if not bindings:
        return [], [f"no [[flighthub.bindings]] entry for room {msg['room_id']}"]
    action_ids, notes = [], []
    for binding in bindings:
        key = binding_key(binding)
        current = streams.current_job(streams.states(redis, binding_ref(binding)))
        if current != msg["job_id"]:
            notes.append(f"job {msg['job_id']} is not the current job ({current}) of converter {key}: "
                         "left as it is")
            continue
        action_id = f"converter-{key}-{event_id}"
        actions.enqueue(redis, action_id, CONVERTER_RECONCILE, event_id=event_id, policy=settings.flighthub.http,
                        params={"action_id": action_id, "binding": key})
        action_ids.append(action_id)
    return action_ids, notes


def ensure_converter(cfg: FlightHub, redis: Redis, key: str, binding: ConverterBinding) -> str:
    """The binding's converter id; creates the converter on first use (once, even when retried)."""
    if binding.converter_id:
        return binding.converter_id
    stored = redis.get(CREATED_PREFIX + key)
    if stored:
        return stored.decode()
    spec = binding.create or {}
    existing = next((m for m in flighthub.list_converters(cfg) if m.get("converter_name") == spec["converter_name"]),
                    None)
    if existing:
        converter_id = str(existing["converter_id"])
    else:
        try:
            converter_id = flighthub.create(cfg, spec["converter_name"], spec["sn"], spec["camera_index"], spec["url"])
        except VendorError as exc:
            if exc.code != flighthub.ALREADY_EXISTS:
                raise
            # Created by an earlier attempt whose answer was lost: find it.
            match = [m for m in flighthub.list_converters(cfg) if m.get("converter_name") == spec["converter_name"]]
            if not match:
                raise
            converter_id = str(match[0]["converter_id"])
    redis.set(CREATED_PREFIX + key, converter_id)
    return converter_id


def reconcile(action_id: str, binding: str) -> None:
    """Make the binding's converter match its stream's target state."""
    with actions.running(action_id, CONVERTER_RECONCILE) as run:
        spec = _binding(run.cfg, binding)
        if spec is None:
            raise Skip(f"no [[flighthub.bindings]] entry {binding} any more")
        with run.locked(LOCK_NAME + binding):
            run.out["result"] = _converge(run.cfg, run.redis, binding, spec)


def _applied(redis: Redis, converter_id: str, desired: bool) -> bool:
    """True if we know the converter already has ``desired`` (no call of unknown outcome since)."""
    value, pending = redis.hmget(CONVERTER_PREFIX + converter_id, "auto_push_stream", "pending")
    return pending is None and value == (b"1" if desired else b"0")


def _forget(redis: Redis, key: str, converter_id: str) -> None:
    """The converter is gone at FlightHub: drop its id (if we created it) and what we applied."""
    redis.delete(CONVERTER_PREFIX + converter_id)
    pipe = redis.pipeline()
    pipe.watch(CREATED_PREFIX + key)
    if pipe.get(CREATED_PREFIX + key) == converter_id.encode():
        pipe.multi()
        pipe.delete(CREATED_PREFIX + key)
        pipe.execute()
    pipe.reset()


def _switch(cfg: FlightHub, redis: Redis, key: str, spec: ConverterBinding, converter_id: str,
            stream: dict[str, Any], desired: bool) -> bool:
    """PUT auto_push_stream; False if the converter no longer exists (and a new one may be made)."""
    # Unknown until the answer comes: a lost answer or a crash leaves "pending", which the next
    # reconcile does not trust, so it PUTs again whatever the vendor did with this one.
    redis.hset(CONVERTER_PREFIX + converter_id, "pending", int(desired))
    try:
        flighthub.set_auto_push(cfg, converter_id, desired)
    except VendorError as exc:
        if exc.code not in flighthub.NOT_FOUND:
            raise
        _forget(redis, key, converter_id)
        if spec.converter_id:
            # Ours to fix, not FlightHub's to retry: fails for good (listed by `failed`) with the
            # vendor's code and message, and again at every later PUT until the binding is fixed.
            log.warning("converter %s of binding %s is gone at FlightHub; set another converter_id (or use create)",
                        converter_id, key)
            raise
        return False
    pipe = redis.pipeline()
    pipe.hset(CONVERTER_PREFIX + converter_id, mapping={
        "auto_push_stream": int(desired), "state": stream["state"], "event_id": stream["event_id"],
        "job_id": stream["job_id"], "applied_at": repr(time.time()), "binding": key})
    pipe.hdel(CONVERTER_PREFIX + converter_id, "pending")
    pipe.hincrby(CONVERTER_PREFIX + converter_id, "switches", 1)
    pipe.execute()
    return True


def _converge(cfg: FlightHub, redis: Redis, key: str, spec: ConverterBinding) -> dict:
    changed = False

    def apply(stream: dict) -> dict | None:
        nonlocal changed
        desired = DESIRED[stream["state"]]
        converter_id = ensure_converter(cfg, redis, key, spec)
        if not _applied(redis, converter_id, desired):
            if not _switch(cfg, redis, key, spec, converter_id, stream, desired):
                return None  # deleted at FlightHub: the next round creates it again
            changed = True
        return {"converter_id": converter_id, "auto_push_stream": desired, "changed": changed}

    return streams.converge(redis, binding_ref(spec), DESIRED, apply,
                            lambda state: Skip(f"stream state {state} leaves the converter as it is"))


def converter_state(redis: Redis, converter_id: str) -> dict:
    return {k.decode(): v.decode() for k, v in redis.hgetall(CONVERTER_PREFIX + converter_id).items()}

"""Forward the drone feed while the show is live: make a FlightHub converter match its stream.

``[[flighthub.bindings]]`` ties a MetaStudio room (or output URL) to a converter. Each stream
state event queues a reconcile; the reconcile reads the stream's *latest* state (not the
event's) and switches ``auto_push_stream`` to match: CONNECTED → on, DISCONNECTED/END → off,
others leave it. A Redis lock per binding keeps two reconciles of one stream from running at
once, on one host or many.
"""

from __future__ import annotations

import hashlib
import time

from redis import Redis
from redis.exceptions import LockError

from app.vendor_settings import ConverterBinding, FlightHub
from workers import streams
from workers.actions import Skip, tracked
from workers.clients import flighthub
from workers.clients.http import VendorError
from workers.context import redis as current_redis
from workers.context import settings

DESIRED = {"CONNECTED": True, "DISCONNECTED": False, "END": False}
CONVERTER_PREFIX = "mh:converter:"
CREATED_PREFIX = "mh:converter-binding:"
LOCK_PREFIX = "mh:lock:converter:"


def stream_ref(room_id: str | None = None, output_url: str | None = None) -> str:
    """The key a stream's state is kept under: its room id, or a digest of its output URL."""
    if room_id:
        return room_id
    return "url-" + hashlib.sha256((output_url or "").encode()).hexdigest()[:16]


def binding_key(binding: ConverterBinding) -> str:
    return "room-" + binding.room_id if binding.room_id else stream_ref(output_url=binding.output_url)


def bindings_for(cfg: FlightHub, room_id: str, output_url: str) -> list[ConverterBinding]:
    return [b for b in cfg.bindings if (b.room_id and b.room_id == room_id)
            or (b.output_url and b.output_url == output_url)]


def _binding(cfg: FlightHub, key: str) -> ConverterBinding | None:
    return next((b for b in cfg.bindings if binding_key(b) == key), None)


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
    """Make the binding's converter match the latest state of its stream."""
    redis = current_redis()
    with tracked(redis, action_id) as out:
        cfg = settings().flighthub
        if cfg is None:
            raise Skip("[flighthub] is not configured")
        spec = _binding(cfg, binding)
        if spec is None:
            raise Skip(f"no [[flighthub.bindings]] entry {binding} any more")
        lock = redis.lock(LOCK_PREFIX + binding, timeout=4 * (cfg.http.connect_timeout + cfg.http.read_timeout) + 30,
                          blocking_timeout=2 * (cfg.http.connect_timeout + cfg.http.read_timeout) + 10)
        if not lock.acquire():
            raise RuntimeError(f"converter {binding} is busy with another reconcile")
        try:
            out["result"] = _converge(cfg, redis, binding, spec)
        finally:
            try:
                lock.release()
            except LockError:
                pass  # expired while we worked: the next reconcile re-checks anyway


def _converge(cfg: FlightHub, redis: Redis, key: str, spec: ConverterBinding) -> dict:
    ref = stream_ref(spec.room_id, spec.output_url)
    for _ in range(5):
        stream = streams.latest(redis, ref)
        desired = DESIRED.get(stream["state"]) if stream else None
        if desired is None:
            raise Skip(f"stream state {stream['state'] if stream else 'unknown'} leaves the converter as it is")
        converter_id = ensure_converter(cfg, redis, key, spec)
        applied = redis.hget(CONVERTER_PREFIX + converter_id, "auto_push_stream")
        if applied != (b"1" if desired else b"0"):
            flighthub.set_auto_push(cfg, converter_id, desired)
            redis.hset(CONVERTER_PREFIX + converter_id, mapping={
                "auto_push_stream": int(desired), "state": stream["state"], "event_id": stream["event_id"],
                "applied_at": repr(time.time()), "binding": key})
            redis.hincrby(CONVERTER_PREFIX + converter_id, "switches", 1)
            changed = True
        else:
            changed = False
        after = streams.latest(redis, ref)
        if after and after["received_at"] == stream["received_at"]:
            return {"converter_id": converter_id, "auto_push_stream": desired, "state": stream["state"],
                    "changed": changed}
    raise RuntimeError("stream state kept changing during the reconcile; retrying")


def converter_state(redis: Redis, converter_id: str) -> dict:
    return {k.decode(): v.decode() for k, v in redis.hgetall(CONVERTER_PREFIX + converter_id).items()}

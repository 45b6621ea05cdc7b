"""Cloud-phone video settings: apply a named ``[koophone.profiles]`` profile to instances.

Bindings (``[[koophone.bindings]]``) make a room's instances follow its stream like a converter
does: each state event that a binding names in ``on_state`` queues a reconcile per batch (at
most 100 instances per call); the reconcile applies the profile of the binding's *target* (the
latest state of the room's current job that ``on_state`` names, see ``workers.streams``), not
of its own event, under a lock per binding, and after each PUT re-reads the target and applies
again if it moved (a slow PUT must not leave the phones on an older profile). The CLI and the
API apply a profile on demand (``apply``).

KooPhone has no read-back, so ``mh:koophone:<instance>`` is what we know was applied; a
``pending`` field marks a PUT whose outcome is not known yet, and such an instance is never
taken as already set.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from redis import Redis

from app.core.config import Settings
from app.core.vendor_config import KooPhone, KooPhoneBinding
from workers import actions, streams
from workers.actions import VIDEO_SETTINGS_APPLY, VIDEO_SETTINGS_RECONCILE, Skip
from workers.clients import koophone

INSTANCE_PREFIX = "mh:koophone:"
LOCK_NAME = "koophone:"  # mh:lock:koophone:<binding>


def binding_key(binding: KooPhoneBinding) -> str:
    """A binding's name for its lock and its actions: its room and a digest of its instances, so
    reordering the config cannot make one binding's record pass for another's."""
    digest = hashlib.sha256("\n".join(binding.instance_ids).encode()).hexdigest()[:12]
    return f"room-{binding.room_id}-{digest}"


def _binding(cfg: KooPhone, key: str) -> KooPhoneBinding | None:
    return next((b for b in cfg.bindings if binding_key(b) == key), None)


def plan(redis: Redis, settings: Settings, event_id: str, msg: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Queue the reconciles of the room's bindings that name this state, unless the event's job is
    not the room's current job (then it moves no phones)."""
    phones = settings.koophone
    if phones is None:
        return [], ["[koophone] is not configured: no cloud-phone settings"]
    room_id, state = msg["room_id"], msg["state"]
    bindings = [(n, b) for n, b in enumerate(phones.bindings) if b.room_id == room_id and state in b.on_state]
    if not bindings:
        return [], []
    current = streams.current_job(streams.states(redis, room_id))
    if current != msg["job_id"]:
        return [], [f"job {msg['job_id']} is not the current job ({current}) of room {room_id}: "
                    "phones left as they are"]
    action_ids = []
    for n, binding in bindings:
        for b, _ in enumerate(koophone.batches(binding.instance_ids)):
            action_id = f"koophone-{event_id}-{n}-{b}"
            actions.enqueue(redis, action_id, VIDEO_SETTINGS_RECONCILE, event_id=event_id, policy=phones.http,
                            params={"action_id": action_id, "binding": binding_key(binding), "batch": b,
                                    "room_id": room_id, "state": state, "profile": binding.on_state[state]})
            action_ids.append(action_id)
    return action_ids, []


def reconcile(action_id: str, binding: str, batch: int, room_id: str | None = None, state: str | None = None,
              profile: str | None = None) -> None:
    """Make one batch of a binding's instances carry the profile of its stream's target state.
    ``room_id``, ``state`` and ``profile`` say what the event asked for (shown in the action's
    record); what is applied is the target's profile, read when the reconcile runs."""
    with actions.running(action_id, VIDEO_SETTINGS_RECONCILE) as run:
        spec = _binding(run.cfg, binding)
        batches = koophone.batches(spec.instance_ids) if spec else []
        if spec is None or batch >= len(batches):
            raise Skip(f"no [[koophone.bindings]] entry {binding} (batch {batch}) any more")
        with run.locked(LOCK_NAME + binding):
            run.out["result"] = _converge(run.redis, run.cfg, spec, batches[batch], action_id)


def _converge(redis: Redis, cfg: KooPhone, spec: KooPhoneBinding, instance_ids: list[str], action_id: str) -> dict:
    changed = False

    def apply(stream: dict) -> dict:
        nonlocal changed
        profile = spec.on_state[stream["state"]]
        if profile not in cfg.profiles:
            raise Skip(f"no profile {profile!r} in [koophone.profiles] any more")
        if not _applied(redis, instance_ids, profile):
            _put(redis, cfg, instance_ids, profile, action_id)
            changed = True
        return {"profile": profile, "instances": len(instance_ids), "changed": changed}

    return streams.converge(redis, spec.room_id, spec.on_state, apply,
                            lambda state: Skip(f"stream state {state} names no profile"))


def _applied(redis: Redis, instance_ids: list[str], profile: str) -> bool:
    """True if we know every instance has the profile (no PUT of unknown outcome since)."""
    pipe = redis.pipeline(transaction=False)
    for instance in instance_ids:
        pipe.hmget(INSTANCE_PREFIX + instance, "profile", "pending")
    return all(value == profile.encode() and pending is None for value, pending in pipe.execute())


def _put(redis: Redis, cfg: KooPhone, instance_ids: list[str], profile: str, action_id: str) -> None:
    pipe = redis.pipeline()
    for instance in instance_ids:
        pipe.hset(INSTANCE_PREFIX + instance, "pending", profile)
    pipe.execute()
    koophone.apply_video_settings(cfg, list(instance_ids), cfg.profiles[profile])
    now = repr(time.time())
    pipe = redis.pipeline()
    for instance in instance_ids:
        pipe.hset(INSTANCE_PREFIX + instance, mapping={"profile": profile, "applied_at": now, "action_id": action_id})
        pipe.hdel(INSTANCE_PREFIX + instance, "pending")
    pipe.execute()


def apply(action_id: str, profile: str, instance_ids: list[str], room_id: str | None = None,
          state: str | None = None) -> None:
    """Apply a profile on demand (the CLI, the API). ``room_id``/``state`` come only with jobs
    queued by an earlier version for a binding: skipped if the stream has left that state."""
    with actions.running(action_id, VIDEO_SETTINGS_APPLY) as run:
        if profile not in run.cfg.profiles:
            raise Skip(f"no profile {profile!r} in [koophone.profiles] any more")
        if room_id and state:
            latest = streams.latest(run.redis, room_id)
            if latest and latest["state"] != state:
                raise Skip(f"stream {room_id} moved on to {latest['state']}")
        _put(run.redis, run.cfg, list(instance_ids), profile, action_id)
        run.out["result"] = {"profile": profile, "instances": len(instance_ids)}

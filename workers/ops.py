"""Operations people run on events and actions: one code path for the CLI (and the admin API)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from app.redact import redact, redact_body
from app.settings import Settings
from app.store import EVENT_PREFIX, job_id_for
from workers import actions, live, timeline, transcode
from workers.clients import koophone
from workers.queues import EVENTS_QUEUE, PROCESS_EVENT


def _job_status(redis: Redis, job_id: str) -> str:
    try:
        return str(Job.fetch(job_id, connection=redis).get_status())
    except NoSuchJobError:
        return "gone"


def event_details(redis: Redis, event_id: str) -> dict[str, Any] | None:
    """An event as people should see it: the record (body decoded, secrets masked), its job,
    its actions with their states and errors, and for uploads the transcodes per rung."""
    raw = redis.hgetall(EVENT_PREFIX + event_id)
    if not raw:
        return None
    doc: dict[str, Any] = {k.decode(): v for k, v in raw.items()}
    body = doc.pop("body", b"")
    doc = {k: v.decode("utf-8", "replace") for k, v in doc.items()}
    for key in ("headers", "refs", "actions", "notes"):
        if doc.get(key):
            doc[key] = json.loads(doc[key])
    doc["body"] = redact_body(body)
    if doc.get("job_id"):
        doc["job_status"] = _job_status(redis, doc["job_id"])
    doc["action_states"] = [redact(a) for a in actions.event_actions(redis, event_id)]
    video_ids = (doc.get("refs") or {}).get("video_ids") or []
    if video_ids and doc.get("type") == "VOD_UPLOAD":
        doc["transcodes"] = {v: transcode.video_transcodes(redis, v) for v in video_ids}
    return doc


def _policy(s: Settings | None, kind: str):
    """The retry policy of the vendor an action calls, for a requeue."""
    if s is None:
        return None
    section = {"transcode": s.transcoder, "converter": s.flighthub, "koophone": s.koophone,
               "live": s.metastudio_api}.get(kind.split(".", 1)[0])
    return section.http if section else None


def replay(redis: Redis, event_id: str, s: Settings | None = None) -> str:
    """Run the event's processing again. Safe: its actions are keyed for idempotency, and an
    action that failed for good is requeued. Returns the new job id."""
    if not redis.exists(EVENT_PREFIX + event_id):
        raise LookupError(f"no event {event_id} (unknown, or past its retention)")
    n = redis.hincrby(EVENT_PREFIX + event_id, "replays", 1)
    job_id = f"{job_id_for(event_id)}-replay-{n}"
    Queue(EVENTS_QUEUE, connection=redis).enqueue(PROCESS_EVENT, event_id, job_id=job_id,
                                                  description=f"replay event {event_id}")
    for action in actions.event_actions(redis, event_id):
        if action.get("status") == "failed":
            actions.requeue(redis, action["id"], _policy(s, action.get("kind", "")))
    return job_id


def failed(redis: Redis, limit: int = 100) -> list[dict[str, Any]]:
    return [redact(a) for a in actions.failed(redis, limit)]


def koophone_apply(redis: Redis, s: Settings, profile: str, instance_ids: list[str]) -> list[str]:
    """Apply a profile to instances now, in batches of at most 100; returns the action ids."""
    if s.koophone is None:
        raise ValueError("[koophone] is not configured")
    if profile not in s.koophone.profiles:
        raise ValueError(f"no profile {profile!r}; known: {sorted(s.koophone.profiles)}")
    bad = [i for i in instance_ids if not 1 <= len(i) <= 32]
    if not instance_ids or bad:
        raise ValueError("instance ids must be 1 to 32 characters" + (f": {bad[:3]}" if bad else ""))
    run = uuid.uuid4().hex[:12]
    ids = []
    for b, batch in enumerate(koophone.batches(instance_ids)):
        action_id = f"koophone-manual-{run}-{b}"
        actions.enqueue(redis, action_id, "workers.video_settings.apply", kind="koophone.apply", event_id=None,
                        policy=s.koophone.http, params={"action_id": action_id, "profile": profile,
                                                        "instance_ids": batch})
        ids.append(action_id)
    return ids


def live_start(redis: Redis, s: Settings, room_id: str, output_url: str, stream_key: str) -> str:
    return live.queue_start(redis, s, room_id, output_url, stream_key)


def live_show(redis: Redis, job_id: str) -> dict[str, Any] | None:
    return timeline.show(redis, job_id)


def action(redis: Redis, action_id: str) -> dict[str, Any] | None:
    doc = actions.record(redis, action_id)
    return redact(doc) if doc else None

"""Operations people run on events and actions: one code path for the CLI (and the admin API)."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from app.core.config import Settings
from app.core.events import EVENT_PREFIX, EVENTS_INDEX, job_id_for, read_event
from app.core.queues import EVENTS_QUEUE, PROCESS_EVENT, QUEUES
from app.core.redact import redact, redact_body
from app.sources import cdnetworks
from workers import actions, converter, live, streams, timeline, transcode
from workers.clients import koophone


def _job_status(redis: Redis, job_id: str) -> str:
    try:
        status = Job.fetch(job_id, connection=redis).get_status()
        return getattr(status, "value", str(status))  # "queued", not str(JobStatus.QUEUED)
    except NoSuchJobError:
        return "gone"


def event_details(redis: Redis, event_id: str) -> dict[str, Any] | None:
    """An event as people should see it: the record (body decoded, secrets masked), its job,
    its actions with their states and errors, and for uploads the transcodes per rung."""
    doc = read_event(redis, event_id)
    if doc is None:
        return None
    doc["body"] = redact_body(doc.get("body", b""))
    if doc.get("job_id"):
        doc["job_status"] = _job_status(redis, doc["job_id"])
    doc["action_states"] = [redact(a) for a in actions.event_actions(redis, event_id)]
    video_ids = (doc.get("refs") or {}).get("video_ids") or []
    if video_ids and doc.get("type") == cdnetworks.UPLOAD_EVENT:
        doc["transcodes"] = {v: transcode.video_transcodes(redis, v) for v in video_ids}
    return doc


def replay(redis: Redis, event_id: str, settings: Settings | None = None,
           skipped: list[dict[str, str]] | None = None) -> str:
    """Run the event's processing again. Safe: its actions are keyed for idempotency, and an
    action that failed for good is requeued, unless its outcome is unknown (those are added to
    ``skipped``, with the reason, when a list is given). Returns the new job id."""
    if not redis.exists(EVENT_PREFIX + event_id):
        raise LookupError(f"no event {event_id} (unknown, or past its retention)")
    n = redis.hincrby(EVENT_PREFIX + event_id, "replays", 1)
    job_id = f"{job_id_for(event_id)}-replay-{n}"
    Queue(EVENTS_QUEUE, connection=redis).enqueue(PROCESS_EVENT, event_id, job_id=job_id,
                                                  description=f"replay event {event_id}")
    for action in actions.event_actions(redis, event_id):
        if actions.is_outcome_unknown(action):
            if skipped is not None:
                skipped.append({"id": action["id"], "reason": _UNKNOWN_SKIPPED})
        elif action.get("status") == "failed":
            actions.requeue(redis, action["id"], actions.policy(settings, action.get("kind")))
    return job_id


def koophone_apply(redis: Redis, settings: Settings, profile: str, instance_ids: list[str]) -> list[str]:
    """Apply a profile to instances now, in batches of at most 100; returns the action ids."""
    if settings.koophone is None:
        raise ValueError("[koophone] is not configured")
    if profile not in settings.koophone.profiles:
        raise ValueError(f"no profile {profile!r}; known: {sorted(settings.koophone.profiles)}")
    bad = [i for i in instance_ids if not 1 <= len(i) <= 32]
    if not instance_ids or bad:
        raise ValueError("instance ids must be 1 to 32 characters" + (f": {bad[:3]}" if bad else ""))
    run = uuid.uuid4().hex[:12]
    ids = []
    for b, batch in enumerate(koophone.batches(instance_ids)):
        action_id = f"koophone-manual-{run}-{b}"
        actions.enqueue(redis, action_id, actions.VIDEO_SETTINGS_APPLY, event_id=None, policy=settings.koophone.http,
                        params={"action_id": action_id, "profile": profile, "instance_ids": batch})
        ids.append(action_id)
    return ids


def action(redis: Redis, action_id: str) -> dict[str, Any] | None:
    doc = actions.record(redis, action_id)
    return redact(doc) if doc else None


# --- listing events (the admin API's GET /api/events) ----------------------------------------

_SUMMARY_FIELDS = ("id", "source", "endpoint", "type", "status", "received_at", "processed_at", "refs", "replays")
_BATCH = 200

# A place in the event index, newest first: (received_at score, event id). Ties on the score are
# ordered by id, descending, as ZREVRANGEBYSCORE orders them, so (score, id) is a total order.
Position = tuple[float, str]


def _summary(values: list[bytes | None]) -> dict[str, Any] | None:
    doc = dict(zip(_SUMMARY_FIELDS, (v.decode("utf-8", "replace") if v is not None else None for v in values),
                   strict=True))
    if doc["id"] is None:  # the record expired; its index entry is pruned on a later write
        return None
    refs = json.loads(doc["refs"] or "{}")
    return {**doc, "received_at": float(doc["received_at"] or 0),
            "processed_at": float(doc["processed_at"]) if doc["processed_at"] else None,
            "refs": refs if isinstance(refs, dict) else {}, "replays": int(doc["replays"] or 0)}


def _matches(doc: dict[str, Any], filters: dict[str, Any]) -> bool:
    refs = doc["refs"]
    for name, wanted in filters.items():
        if wanted is None:
            continue
        if name in ("source", "type", "status"):
            if doc[name] != wanted:
                return False
        elif name == "video_id":
            if wanted not in (refs.get("video_ids") or []):
                return False
        elif refs.get(name) != wanted:
            return False
    return True


def list_events(redis: Redis, *, before: Position | None = None, since: float | None = None,
                until: float | None = None, limit: int = 50, scan_limit: int = 5000,
                **filters: str | None) -> tuple[list[dict[str, Any]], Position | None]:
    """Events newest first, matching ``filters`` (source, type, status, room_id, job_id, video_id)
    and ``since <= received_at < until``, strictly after ``before`` in that order.

    Returns (events, position to continue from, or None at the end). The filters are not
    indexed, so at most ``scan_limit`` index entries are read per call: a short page with a
    position means the scan stopped there, not that nothing is left.
    """
    unknown = set(filters) - {"source", "type", "status", "room_id", "job_id", "video_id"}
    if unknown:
        raise TypeError(f"unknown event filters: {sorted(unknown)}")
    rows: list[dict[str, Any]] = []
    position = before
    if until is not None and (position is None or until <= position[0]):
        position = (until, "")  # "" sorts below every id: the events at `until` itself are left out
    low = "-inf" if since is None else repr(since)
    scanned, batch = 0, _BATCH
    while scanned < scan_limit:
        high = "+inf" if position is None else repr(position[0])
        raw = redis.zrevrangebyscore(EVENTS_INDEX, high, low, start=0, num=batch, withscores=True)
        # Leave out the ties at the position's score already passed (ids at or above its id).
        entries = [(m.decode(), s) for m, s in raw if position is None or s != position[0] or m.decode() < position[1]]
        if not entries:
            if len(raw) < batch:
                return rows, None
            batch *= 2  # a whole batch of passed ties (events received at the very same instant)
            continue
        pipe = redis.pipeline(transaction=False)
        for event_id, _ in entries:
            pipe.hmget(EVENT_PREFIX + event_id, _SUMMARY_FIELDS)
        for (event_id, score), values in zip(entries, pipe.execute(), strict=True):
            scanned += 1
            position = (score, event_id)
            doc = _summary(values)
            if doc is not None and _matches(doc, filters):
                rows.append(doc)
                if len(rows) == limit:
                    return rows, position if _more_after(redis, position, low) else None
            if scanned >= scan_limit:
                break
    return rows, position if position is not None and _more_after(redis, position, low) else None


def _more_after(redis: Redis, position: Position, low: str) -> bool:
    """Whether the index holds anything after ``position`` (so a cursor is worth giving)."""
    score, member = position
    if redis.zrevrangebyscore(EVENTS_INDEX, "(" + repr(score), low, start=0, num=1):
        return True
    ties = redis.zrangebyscore(EVENTS_INDEX, repr(score), repr(score))
    return any(m.decode() < member for m in ties)


# --- failed actions and event jobs (GET /api/failed, POST /api/failed/requeue) ----------------

EVENT_JOB_KIND = "event.process"
_EVENT_JOB_ID = re.compile(r"event-([0-9a-f]+)(?:-replay-[0-9]+)?")


def _event_brief(redis: Redis, event_id: str | None) -> dict[str, Any] | None:
    if not event_id:
        return None
    values = redis.hmget(EVENT_PREFIX + event_id, "id", "source", "type", "status", "received_at")
    if values[0] is None:
        return None
    doc = dict(zip(("id", "source", "type", "status", "received_at"), (v.decode() for v in values), strict=True))
    return {**doc, "received_at": float(doc["received_at"])}


def _failed_job(redis: Redis, job_id: str) -> Job | None:
    try:
        job = Job.fetch(actions.job_id(job_id), connection=redis)
    except (NoSuchJobError, ValueError):  # ValueError: not even a valid RQ job id
        return None
    return job if job.get_status() == JobStatus.FAILED else None


def _job_error(job: Job) -> dict[str, Any]:
    result = job.latest_result()
    trace = (result.exc_string if result is not None else None) or ""
    lines = [line for line in trace.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "failed"
    code, _, message = last.partition(": ")
    return {"vendor": None, "code": code if message else None, "message": (message or last)[:500], "transient": None}


def _failed_item(redis: Redis, item_id: str, failed_at: float | None = None) -> dict[str, Any] | None:
    """One failed action (our failed index, or RQ's failed registry after a crash) or event job."""
    job = _failed_job(redis, item_id)
    match = _EVENT_JOB_ID.fullmatch(item_id)
    if match:
        if job is None:
            return None
        event_id = match.group(1)
        return {"id": item_id, "kind": EVENT_JOB_KIND, "event_id": event_id, "status": "failed",
                "attempts": None, "failed_at": job.ended_at.timestamp() if job.ended_at else None,
                "last_error": _job_error(job), "params": {"event_id": event_id}, "requeueable": True,
                "event": _event_brief(redis, event_id)}
    doc = actions.record(redis, item_id)
    if failed_at is None:
        failed_at = redis.zscore(actions.FAILED_INDEX, item_id)
    if doc is None or (failed_at is None and job is None):
        return None
    if failed_at is None and job is not None and job.ended_at:
        failed_at = job.ended_at.timestamp()
    doc = redact(doc)
    return {"id": item_id, "kind": doc.get("kind"), "event_id": doc.get("event_id"), "status": doc.get("status"),
            "attempts": doc.get("attempts"), "failed_at": failed_at,
            "last_error": doc.get("last_error") or (_job_error(job) if job else None),
            "params": doc.get("params") or {}, "outcome": doc.get("outcome"),
            "replaced_by": doc.get(live.REPLACED_BY), "resolve": live.resolution(doc),
            # A finished job with a failed record: its effect ended badly later (a transcode task).
            "requeueable": not actions.is_outcome_unknown(doc) and (
                job is not None or _job_status(redis, actions.job_id(item_id)) == "finished"),
            "event": _event_brief(redis, doc.get("event_id"))}


def _kind_matches(kind: str | None, wanted: str) -> bool:
    return kind is not None and (kind == wanted or kind.startswith(wanted + "."))


def failed_items(redis: Redis, *, ids: list[str] | None = None, kind: str | None = None,
                 event_id: str | None = None, vendor: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """What failed for good, newest first: actions (with the vendor's code and message) and event
    jobs that ran out of retries, each with the event it belongs to. ``ids`` picks some by id;
    ``kind`` matches a kind or its family ("transcode" matches "transcode.submit")."""
    if ids is not None:
        candidates: dict[str, float | None] = dict.fromkeys(ids)
    else:
        candidates = {m.decode(): s for m, s in redis.zrevrange(actions.FAILED_INDEX, 0, 9999, withscores=True)}
        for queue_name in QUEUES:
            for job_id in FailedJobRegistry(queue_name, connection=redis).get_job_ids():
                candidates.setdefault(job_id, None)
    items = []
    for item_id, failed_at in candidates.items():
        item = _failed_item(redis, item_id, failed_at)
        if item is None:
            continue
        if kind and not _kind_matches(item["kind"], kind):
            continue
        if event_id and item["event_id"] != event_id:
            continue
        if vendor and (item["last_error"] or {}).get("vendor") != vendor:
            continue
        items.append(item)
    items.sort(key=lambda i: i["failed_at"] or 0.0, reverse=True)
    return items[:limit]


_UNKNOWN_SKIPPED = ("outcome unknown: the vendor may have done it, so it is never run again by a requeue or a "
                    "replay; check the vendor (see its `resolve`), then start it again explicitly if need be")


def requeue_failed(redis: Redis, settings: Settings | None, items: list[dict[str, Any]]) -> dict[str, list]:
    """Run failed actions and event jobs again (actions with their vendor's retry schedule).
    Returns {"requeued": [ids], "skipped": [{"id", "reason"}]}."""
    requeued: list[str] = []
    skipped: list[dict[str, str]] = []
    for item in items:
        if item["kind"] == EVENT_JOB_KIND:
            try:
                FailedJobRegistry(EVENTS_QUEUE, connection=redis).requeue(item["id"])
                requeued.append(item["id"])
            except (NoSuchJobError, InvalidJobOperation):
                skipped.append({"id": item["id"], "reason": "no longer in the failed registry"})
        elif actions.is_outcome_unknown(item):
            skipped.append({"id": item["id"], "reason": _UNKNOWN_SKIPPED})
        elif actions.requeue(redis, item["id"], actions.policy(settings, item["kind"])):
            requeued.append(item["id"])
        else:
            skipped.append({"id": item["id"], "reason": "its job is gone (past its failure_ttl) or no longer "
                                                        "failed; replay its event instead"})
    return {"requeued": requeued, "skipped": skipped}


# --- live jobs and transcodes (GET /api/live/jobs/{id}, GET /api/transcodes) -------------------

def live_job(redis: Redis, settings: Settings | None, job_id: str) -> dict[str, Any] | None:
    """A live job as a whole: its script timeline, its room's stream states (each with the job
    it belonged to, while that event is kept) and the converters following that room."""
    shown = timeline.show(redis, job_id)
    if shown is None:
        return None
    room_id = shown.get("room_id") or ""
    latest = streams.latest(redis, room_id) if room_id else None
    history = streams.states(redis, room_id) if room_id else []  # stream order; each state keeps its job_id
    converters = []
    if settings is not None and settings.flighthub is not None and room_id:
        output_url = shown.get("output_url") or (latest or {}).get("output_url") or ""
        for binding in converter.bindings_for(settings.flighthub, room_id, output_url):
            key = converter.binding_key(binding)
            created = redis.get(converter.CREATED_PREFIX + key)
            converter_id = binding.converter_id or (created.decode() if created else None)
            converters.append({"binding": key, "converter_id": converter_id,
                               "state": converter.converter_state(redis, converter_id) if converter_id else {}})
    return {"job_id": job_id, "timeline": shown,
            "stream": {"room_id": room_id or None, "latest": latest, "history": history},
            "converters": converters}


def _rung_order(rung: str) -> tuple[int, str]:
    return (int(rung), rung) if rung.isdigit() else (1 << 30, rung)


def transcodes(redis: Redis, video_id: str) -> list[dict[str, str]]:
    """A video's transcodes, one record per rung of the ladder (lowest first)."""
    by_rung = transcode.video_transcodes(redis, video_id)
    return [{**by_rung[r], "rung": r} for r in sorted(by_rung, key=_rung_order)]

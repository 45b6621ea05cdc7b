"""The job run for every recorded event: decide its actions and queue them, each once.

It re-reads the stored raw body through the same source schema the web side used, so what
the workers act on is exactly what was validated. Deciding is quick and touches no vendor;
the vendor calls are the actions' own jobs, with their own retries. Running it again (a
replay) is safe: every action is keyed for idempotency.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from redis import Redis
from rq import get_current_job

from app import logs
from app.receive import decode_body
from app.settings import Settings
from app.sources import SOURCES
from app.sources.base import Parsed
from app.store import EVENT_PREFIX
from workers import actions, converter, streams, timeline, transcode
from workers.clients import koophone
from workers.context import settings

log = logging.getLogger(__name__)


def _parse(record: dict[bytes, bytes]) -> Parsed:
    source = SOURCES[record[b"source"].decode()]
    path = record[b"endpoint"].decode()
    endpoint = next(e for e in source.ENDPOINTS if e.path == path)
    return endpoint.parse(decode_body(record[b"body"], endpoint.accept_base64))


def process_event(event_id: str) -> str:
    """Decide and queue the event's actions; mark it processed. Returns its final status."""
    with logs.context(event_id=event_id):  # issue 4: every log line of this job names the event
        return _process(event_id)


def _process(event_id: str) -> str:
    job = get_current_job()
    redis = job.connection
    key = EVENT_PREFIX + event_id
    record = redis.hgetall(key)
    if not record:
        # Retention passed before a worker got to it: nothing left to do, and nothing to fail.
        log.warning("event %s: record expired before processing", event_id)
        return "expired"
    received_at = float(record[b"received_at"])
    if record.get(b"status") == b"ignored":
        return "ignored"
    parsed = _parse(record)
    action_ids, notes = decide(redis, settings(), event_id, parsed, received_at)
    redis.hset(key, mapping={"status": "processed", "processed_at": repr(time.time()),
                             "actions": json.dumps(action_ids), "notes": json.dumps(notes)})
    log.info("event %s processed (%s): %d action(s)", event_id, parsed.event_type, len(action_ids))
    return "processed"


def decide(redis: Redis, s: Settings, event_id: str, parsed: Parsed, received_at: float) -> tuple[list[str], list[str]]:
    """(action ids queued, notes on what was not done and why) for one event."""
    data = parsed.data
    if parsed.event_type == "VOD_UPLOAD":
        if s.transcoder is None:
            return [], ["[transcoder] is not configured: no transcodes"]
        return transcode.plan_upload(redis, s.transcoder, data["data"]["videoListInfo"], event_id)
    if parsed.event_type == "VOD_TRANSCODE":
        return [], ["CDNetworks finished its own transcoding: recorded, nothing to call"]
    if parsed.event_type == "RTMP_STREAM_STATE_CHANGE":
        return _stream_state(redis, s, event_id, data, received_at)
    if parsed.event_type == "SHOOT_SCRIPT_SWITCH":
        moved = timeline.script_switched(redis, data, received_at, event_id)
        return [], [] if moved else ["an event received later already moved the script timeline"]
    if parsed.event_type == "REPLY_COMMAND_FINISH":
        timeline.reply_finished(redis, data, received_at)
        return [], []
    return [], [f"no actions for {parsed.event_type}"]


def _stream_state(redis: Redis, s: Settings, event_id: str, msg: dict[str, Any],
                  received_at: float) -> tuple[list[str], list[str]]:
    room_id, state, output_url = msg["room_id"], msg["state"], msg["output_url"]
    latest = True
    for ref in (room_id, converter.stream_ref(output_url=output_url)):
        latest = streams.record_state(redis, ref, state, received_at, event_id, msg["job_id"], output_url) and latest
    action_ids: list[str] = []
    notes = [] if latest else [f"a later state of stream {room_id} was already recorded; converging on it"]
    if s.flighthub is None:
        notes.append("[flighthub] is not configured: no converter switching")
    else:
        bindings = converter.bindings_for(s.flighthub, room_id, output_url)
        if not bindings:
            notes.append(f"no [[flighthub.bindings]] entry for room {room_id}")
        for binding in bindings:
            key = converter.binding_key(binding)
            action_id = f"converter-{key}-{event_id}"
            actions.enqueue(redis, action_id, converter.reconcile, kind="converter.reconcile", event_id=event_id,
                            policy=s.flighthub.http, params={"action_id": action_id, "binding": key})
            action_ids.append(action_id)
    if s.koophone is None:
        notes.append("[koophone] is not configured: no cloud-phone settings")
    else:
        for n, binding in enumerate(s.koophone.bindings):
            profile = binding.on_state.get(state) if binding.room_id == room_id else None
            if not profile:
                continue
            for b, batch in enumerate(koophone.batches(binding.instance_ids)):
                action_id = f"koophone-{event_id}-{n}-{b}"
                actions.enqueue(redis, action_id, "workers.video_settings.apply", kind="koophone.apply",
                                event_id=event_id, policy=s.koophone.http,
                                params={"action_id": action_id, "profile": profile, "instance_ids": batch,
                                        "room_id": room_id, "state": state})
                action_ids.append(action_id)
    return action_ids, notes

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

from app.core import logs
from app.core.body import decode_body
from app.core.config import Settings
from app.core.events import EVENT_PREFIX
from app.sources import SOURCES
from app.sources.base import Parsed
from workers import converter, streams, timeline, transcode, video_settings
from workers.context import settings

log = logging.getLogger(__name__)

SWITCH_NOTES = {"older": ["a switch ordered after this one already moved the script timeline"],
                "same": ["the script timeline already showed this paragraph"]}


def _parse(record: dict[bytes, bytes]) -> Parsed:
    source = SOURCES[record[b"source"].decode()]
    path = record[b"endpoint"].decode()
    endpoint = next(e for e in source.ENDPOINTS if e.path == path)
    return endpoint.parse(decode_body(record[b"body"], endpoint.accept_base64))


def process_event(event_id: str) -> str:
    """Decide and queue the event's actions; mark it processed. Returns its final status."""
    with logs.context(event_id=event_id):  # every log line of this job names the event
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
    sent_at = float(record[b"sent_at"]) if record.get(b"sent_at") else None
    if record.get(b"status") in (b"ignored", b"duplicate"):
        # Not ours to act on, or a re-delivery whose original (``duplicate_of``) is processed.
        return record[b"status"].decode()
    parsed = _parse(record)
    action_ids, notes = decide(redis, settings(), event_id, parsed, received_at, sent_at)
    redis.hset(key, mapping={"status": "processed", "processed_at": repr(time.time()),
                             "actions": json.dumps(action_ids), "notes": json.dumps(notes)})
    log.info("event %s processed (%s): %d action(s)", event_id, parsed.event_type, len(action_ids))
    return "processed"


def decide(redis: Redis, s: Settings, event_id: str, parsed: Parsed, received_at: float,
           sent_at: float | None = None) -> tuple[list[str], list[str]]:
    """(action ids queued, notes on what was not done and why) for one event. ``sent_at`` is the
    vendor's signed send time, where the request carried one (it orders live events)."""
    data = parsed.data
    if parsed.event_type == "VOD_UPLOAD":
        if s.transcoder is None:
            return [], ["[transcoder] is not configured: no transcodes"]
        return transcode.plan_upload(redis, s.transcoder, data["data"]["videoListInfo"], event_id)
    if parsed.event_type == "VOD_TRANSCODE":
        return [], ["CDNetworks finished its own transcoding: recorded, nothing to call"]
    if parsed.event_type == "RTMP_STREAM_STATE_CHANGE":
        return _stream_state(redis, s, event_id, data, received_at, sent_at)
    if parsed.event_type == "SHOOT_SCRIPT_SWITCH":
        outcome = timeline.script_switched(redis, data, received_at, event_id, sent_at)
        return [], SWITCH_NOTES.get(outcome, [])
    if parsed.event_type == "REPLY_COMMAND_FINISH":
        timeline.reply_finished(redis, data, received_at)
        return [], []
    return [], [f"no actions for {parsed.event_type}"]


def _stream_state(redis: Redis, s: Settings, event_id: str, msg: dict[str, Any], received_at: float,
                  sent_at: float | None) -> tuple[list[str], list[str]]:
    """Keep the state, then queue the reconciles of what follows this stream (each converges on
    the stream's target state, whatever order the events come in)."""
    streams.record_state(redis, room_id=msg["room_id"], job_id=msg["job_id"], output_url=msg["output_url"],
                         state=msg["state"], event_id=event_id, received_at=received_at, sent_at=sent_at)
    latest = streams.latest(redis, msg["room_id"])
    notes = [] if latest is None or latest["event_id"] == event_id else [
        f"a state ordered after this one is recorded for room {msg['room_id']} ({latest['state']}, job "
        f"{latest['job_id']}); converging on the room's target state"]
    action_ids, more_notes = converter.plan(redis, s, event_id, msg)
    more_ids, phone_notes = video_settings.plan(redis, s, event_id, msg)
    return action_ids + more_ids, notes + more_notes + phone_notes

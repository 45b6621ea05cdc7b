"""The job run for every recorded event: decide its actions and queue them, each once.

It re-reads the stored raw body through the same source schema the web side used, so what
the workers act on is exactly what was validated. Deciding is quick and touches no vendor.
Then the job makes the first attempt of each action it queued, once the event is marked
processed; each action keeps its own RQ job for its retries (``actions.run_first_attempts``).
Running it again (a replay) is safe: every action is keyed for idempotency.

What an event type leads to is ``ROUTES``: (source, event type) -> planner. A planner records
what the event says (stream state, script timeline) and queues the actions that follow; the
effect modules (``transcode``, ``converter``, ``video_settings``) own their own planning.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq import get_current_job

from app.core import logs
from app.core.body import decode_body
from app.core.config import Settings
from app.core.events import DUPLICATE, EVENT_PREFIX, IGNORED, PROCESSED, read_event
from app.sources import SOURCES, cdnetworks, metastudio
from app.sources.base import Parsed
from workers import actions, context, converter, streams, timeline, transcode, video_settings

log = logging.getLogger(__name__)

Plan = tuple[list[str], list[str]]  # (action ids queued, notes on what was not done and why)


@dataclass(frozen=True)
class Incoming:
    """One recorded event as a planner sees it."""

    event_id: str
    source: str
    event_type: str
    data: dict[str, Any]  # the validated payload (MetaStudio: the decoded ``message``)
    received_at: float
    sent_at: float | None = None  # the vendor's signed send time, where the request carried one


Planner = Callable[[Redis, Settings, Incoming], Plan]
EffectPlanner = Callable[[Redis, Settings, str, dict[str, Any]], Plan]  # (redis, settings, event id, message)


# --- planners -------------------------------------------------------------------------------

def _upload(redis: Redis, settings: Settings, ev: Incoming) -> Plan:
    if settings.transcoder is None:
        return [], ["[transcoder] is not configured: no transcodes"]
    return transcode.plan_upload(redis, settings.transcoder, ev.data["data"]["videoListInfo"], ev.event_id)


def _vendor_transcoded(redis: Redis, settings: Settings, ev: Incoming) -> Plan:
    return [], ["CDNetworks finished its own transcoding: recorded, nothing to call"]


# What follows a stream's state. Each effect plans its own reconciles from the state message
# (and skips a job that is not its scope's current one), so adding one is one entry here.
STREAM_EFFECTS: tuple[EffectPlanner, ...] = (
    converter.plan,       # FlightHub converters bound to the room or output URL
    video_settings.plan,  # KooPhone instances bound to the room
)


def _stream_state(redis: Redis, settings: Settings, ev: Incoming) -> Plan:
    """Keep the state, then let each effect queue its reconciles (each converges on the stream's
    target state, whatever order the events come in)."""
    msg = ev.data
    streams.record_state(redis, room_id=msg["room_id"], job_id=msg["job_id"], output_url=msg["output_url"],
                         state=msg["state"], event_id=ev.event_id, received_at=ev.received_at, sent_at=ev.sent_at)
    latest = streams.latest(redis, msg["room_id"])
    action_ids: list[str] = []
    notes = [] if latest is None or latest["event_id"] == ev.event_id else [
        f"a state ordered after this one is recorded for room {msg['room_id']} ({latest['state']}, job "
        f"{latest['job_id']}); converging on the room's target state"]
    for plan in STREAM_EFFECTS:
        more_ids, more_notes = plan(redis, settings, ev.event_id, msg)
        action_ids += more_ids
        notes += more_notes
    return action_ids, notes


SWITCH_NOTES = {"older": ["a switch ordered after this one already moved the script timeline"],
                "same": ["the script timeline already showed this paragraph"]}


def _script_switch(redis: Redis, settings: Settings, ev: Incoming) -> Plan:
    outcome = timeline.script_switched(redis, ev.data, ev.received_at, ev.event_id, ev.sent_at)
    return [], SWITCH_NOTES.get(outcome, [])


def _reply_finished(redis: Redis, settings: Settings, ev: Incoming) -> Plan:
    timeline.reply_finished(redis, ev.data, ev.received_at)
    return [], []


# What each event type leads to. A type its source does not handle (parsed as not ``known``) is
# recorded as ignored on arrival and never gets here; a handled type without an entry is
# processed with a note and no actions.
ROUTES: dict[tuple[str, str], Planner] = {
    (cdnetworks.NAME, cdnetworks.UPLOAD_EVENT): _upload,
    (cdnetworks.NAME, cdnetworks.TRANSCODE_EVENT): _vendor_transcoded,
    (metastudio.NAME, metastudio.STREAM_STATE_EVENT): _stream_state,
    (metastudio.NAME, metastudio.SCRIPT_SWITCH_EVENT): _script_switch,
    (metastudio.NAME, metastudio.REPLY_FINISH_EVENT): _reply_finished,
}


def decide(redis: Redis, settings: Settings, ev: Incoming) -> Plan:
    """(action ids queued, notes on what was not done and why) for one event."""
    planner = ROUTES.get((ev.source, ev.event_type))
    if planner is None:
        return [], [f"no actions for {ev.event_type}"]
    return planner(redis, settings, ev)


# --- the job --------------------------------------------------------------------------------

def _parse(record: dict[str, Any]) -> Parsed:
    endpoint = next(e for e in SOURCES[record["source"]].ENDPOINTS if e.path == record["endpoint"])
    return endpoint.parse(decode_body(record["body"], endpoint.accept_base64))


def process_event(event_id: str) -> str:
    """Decide and queue the event's actions; mark it processed. Returns its final status."""
    with logs.context(event_id=event_id):  # every log line of this job names the event
        return _process(event_id)


def _process(event_id: str) -> str:
    job = get_current_job()
    redis = job.connection
    record = read_event(redis, event_id)
    if record is None:
        # Retention passed before a worker got to it: nothing left to do, and nothing to fail.
        log.warning("event %s: record expired before processing", event_id)
        return "expired"
    if record["status"] in (IGNORED, DUPLICATE):
        # Not ours to act on, or a re-delivery whose original (``duplicate_of``) is processed.
        return record["status"]
    parsed = _parse(record)
    ev = Incoming(event_id=event_id, source=record["source"], event_type=parsed.event_type, data=parsed.data,
                  received_at=float(record["received_at"]),
                  sent_at=float(record["sent_at"]) if record.get("sent_at") else None)
    with actions.first_attempts_here() as first:
        action_ids, notes = decide(redis, context.settings(), ev)
    redis.hset(EVENT_PREFIX + event_id, mapping={"status": PROCESSED, "processed_at": repr(time.time()),
                             "actions": json.dumps(action_ids), "notes": json.dumps(notes)})
    log.info("event %s processed (%s): %d action(s)", event_id, parsed.event_type, len(action_ids))
    # The new actions' first attempts, here: no second job and no queue wait before the vendor call
    # (workers/actions.py, "the first attempt, inside the event job").
    actions.run_first_attempts(redis, first)
    return "processed"

"""Marshmallow schemas of the admin API (app/admin/api.py): what it loads from a request, what it
dumps in a response. The OpenAPI document (app/admin/openapi.py) is generated from these, so a field
added here is documented there."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_dump, validate, validates_schema

from app.core.events import EVENT_STATUSES
from app.core.fields import Strict
from app.sources import SOURCES

_EVENT_ID = re.compile(r"[0-9a-f]{1,64}")
_NAME = validate.Length(min=1, max=128)


# --- fields ---------------------------------------------------------------------------------

class Cursor(fields.Field):
    """An opaque place in the event list: URL-safe Base64 of ``[received_at, event_id]`` (the
    last event passed). It names a place in the order, not an offset, so new events never shift
    a page; it is valid with any filters."""

    default_error_messages = {"invalid": "Not a valid cursor (use next_cursor from a previous page as is)."}

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        score, event_id = value
        raw = json.dumps([score, event_id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple[float, str]:
        if not isinstance(value, str) or not 1 <= len(value) <= 200:
            raise self.make_error("invalid")
        try:
            score, event_id = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        except (binascii.Error, ValueError, TypeError):
            raise self.make_error("invalid") from None
        if (not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score)
                or not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id)):
            raise self.make_error("invalid")
        return float(score), event_id


class Instant(fields.AwareDateTime):
    """An ISO 8601 date-time (UTC when it names no offset), loaded as Unix seconds."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_timezone=dt.UTC, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        return super()._deserialize(value, attr, data, **kwargs).timestamp()


# --- requests -------------------------------------------------------------------------------

class EventsQuery(Strict):
    source = fields.String(validate=validate.OneOf(tuple(SOURCES)))
    type = fields.String(validate=validate.Length(min=1, max=64),
                         metadata={"description": "event type, e.g. VOD_UPLOAD"})
    status = fields.String(validate=validate.OneOf(EVENT_STATUSES))
    room_id = fields.String(validate=_NAME)
    job_id = fields.String(validate=_NAME)
    video_id = fields.String(validate=_NAME)
    since = Instant(metadata={"description": "received at or after (ISO 8601; UTC if no offset)"})
    until = Instant(metadata={"description": "received before (ISO 8601; UTC if no offset)"})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = Cursor(metadata={"type": "string", "pattern": "^[A-Za-z0-9_-]{1,200}$",
                              "description": "next_cursor of the previous page"})

    @validates_schema
    def _range(self, data: dict, **_: Any) -> None:
        if "since" in data and "until" in data and data["since"] > data["until"]:
            raise ValidationError("Must not be before since.", "until")


class FailedQuery(Strict):
    kind = fields.String(validate=validate.Length(min=1, max=64),
                         metadata={"description": "an action kind or its family: transcode, transcode.submit, "
                                                  "event.process"})
    event_id = fields.String(validate=_NAME)
    vendor = fields.String(validate=validate.Length(min=1, max=64))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class TranscodesQuery(Strict):
    video_id = fields.String(required=True, validate=_NAME)


class RequeueFilter(Strict):
    kind = fields.String(validate=validate.Length(min=1, max=64))
    event_id = fields.String(validate=_NAME)
    vendor = fields.String(validate=validate.Length(min=1, max=64))

    @validates_schema
    def _something(self, data: dict, **_: Any) -> None:
        if not data:
            raise ValidationError("Give at least one of kind, event_id, vendor (or use all).")


class RequeueRequest(Strict):
    """Exactly one of: ``id`` (one failed action or event job), ``filter``, ``all: true``."""

    id = fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,256}$", error="Not an action or RQ job id."))
    filter = fields.Nested(RequeueFilter)
    all = fields.Boolean(validate=validate.Equal(True))

    @validates_schema
    def _exactly_one(self, data: dict, **_: Any) -> None:
        if len(data) != 1:
            raise ValidationError("Give exactly one of id, filter, all.")


class KooPhoneApplyRequest(Strict):
    profile = fields.String(required=True, validate=validate.Length(min=1, max=64),
                            metadata={"description": "a [koophone.profiles] name"})
    instance_ids = fields.List(fields.String(validate=validate.Length(min=1, max=32)), required=True,
                               validate=validate.Length(min=1, max=1000),
                               metadata={"description": "applied in batches of at most 100"})


class LiveStartRequest(Strict):
    room_id = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,128}$"))
    output_url = fields.String(required=True, validate=[
        validate.Length(max=2048),
        validate.Regexp(r"^rtmps?://[^\s/?#]+[^\s]*$", error="Must be an rtmp:// or rtmps:// URL with a host.")])
    stream_key = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=512),
                               metadata={"description": "a secret: sent to MetaStudio, never stored or shown"})


class LiveStartAgainRequest(Strict):
    stream_key = fields.String(load_only=True, validate=validate.Length(min=1, max=512), metadata={
        "description": "only if the earlier start's job has expired (30 days): its key is kept nowhere else"})


# --- responses ------------------------------------------------------------------------------

class Error(Schema):
    code = fields.Integer(required=True, metadata={"description": "the HTTP status"})
    message = fields.String(required=True)
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()),
                         metadata={"description": "field path → messages (400 only)"})
    line = fields.Integer(metadata={"description": "a body sent as JSON that does not parse: where it broke (1-based)"})
    column = fields.Integer(metadata={"description": "… its column (1-based)"})
    position = fields.Integer(metadata={"description": "… its offset in the body (0-based)"})


class HookAccepted(Schema):
    code = fields.Integer(required=True, validate=validate.Equal(0), metadata={"enum": [0]})
    message = fields.String(required=True)
    event_id = fields.String(required=True)
    duplicate = fields.Boolean(metadata={"description": "a repeat delivery: the first one's id, no second job"})
    ignored = fields.Boolean(metadata={"description": "an event type not handled: stored, no job"})


class Health(Schema):
    status = fields.String(required=True)


class Ready(Schema):
    status = fields.String(required=True, metadata={"enum": ["ready", "unready"]})
    redis = fields.String(required=True, metadata={"enum": ["ok", "unreachable"]})
    spool_depth = fields.Integer(required=True)


class Refs(Schema):
    room_id = fields.String()
    job_id = fields.String()
    video_ids = fields.List(fields.String())


class EventSummary(Schema):
    id = fields.String(required=True)
    source = fields.String(required=True)
    endpoint = fields.String(required=True)
    type = fields.String(required=True)
    status = fields.String(required=True)
    received_at = fields.Float(required=True, metadata={"description": "Unix seconds"})
    processed_at = fields.Float(allow_none=True)
    refs = fields.Nested(Refs, required=True)
    replays = fields.Integer(required=True)


class EventPage(Schema):
    events = fields.List(fields.Nested(EventSummary), required=True)
    next_cursor = Cursor(required=True, allow_none=True, metadata={
        "type": "string", "description": "null at the end; a short page with a cursor means the scan "
                                         "budget ran out before the page filled: follow it"})


class ActionError(Schema):
    vendor = fields.String(allow_none=True)
    code = fields.Raw(allow_none=True, metadata={"description": "the vendor's error code (string or number)"})
    message = fields.String(allow_none=True)
    status = fields.Integer(allow_none=True, metadata={"description": "HTTP status of the vendor's answer"})
    transient = fields.Boolean(allow_none=True)
    trace = fields.String()


class Action(Schema):
    id = fields.String(required=True)
    kind = fields.String()
    event_id = fields.String()
    status = fields.String(metadata={"enum": ["queued", "running", "retrying", "held", "succeeded", "skipped",
                                             "failed"]})
    attempts = fields.Integer()
    params = fields.Dict(metadata={"description": "secrets masked"})
    last_error = fields.Nested(ActionError, allow_none=True)
    result = fields.Dict(metadata={"description": "the vendor's answer, in short"})
    outcome = fields.String(metadata={"enum": ["unknown"], "description": "unknown: the call may have taken "
                                      "effect at the vendor; never run again by itself (see /api/failed)"})
    replaces = fields.String(metadata={"description": "a live start started again: the failed start it replaces"})
    replaced_by = fields.String(metadata={"description": "a failed live start: the start that replaced it"})
    created_at = fields.Float()
    updated_at = fields.Float()


class TranscodeRung(Schema):
    rung = fields.String(required=True)
    status = fields.String(attribute="state", metadata={
        "description": "creating submitted waiting transcoding resubmitting success failed deleted timed_out"})
    task_id = fields.String()
    progress = fields.Float()
    target_url = fields.String()
    error = fields.String()
    resubmits = fields.Integer()
    failed_task_ids = fields.List(fields.String())
    origin_url = fields.String()
    template_id = fields.Integer()
    event_id = fields.String()
    submitted_at = fields.Float()
    deadline = fields.Float()
    updated_at = fields.Float()

    @pre_dump
    def _clean(self, rung: dict[str, Any], **_: Any) -> dict[str, Any]:
        """The record's values are all strings, empty for 'none'."""
        out = {k: v for k, v in rung.items() if v not in ("", None)}
        if "failed_task_ids" in out:
            out["failed_task_ids"] = out["failed_task_ids"].split(",")
        return out


class Transcodes(Schema):
    video_id = fields.String(required=True)
    rungs = fields.List(fields.Nested(TranscodeRung), required=True)


class EventDetail(EventSummary):
    remote_addr = fields.String()
    headers = fields.Dict(keys=fields.String(), values=fields.String())
    dedup = fields.String()
    body = fields.Raw(required=True, metadata={"description": "the stored body, decoded, secrets masked"})
    job_id = fields.String(metadata={"description": "its RQ job (none for an ignored event)"})
    job_status = fields.String()
    actions = fields.List(fields.String(), metadata={"description": "ids of the actions it queued"})
    notes = fields.List(fields.String(), metadata={"description": "what was not done, and why"})
    action_states = fields.List(fields.Nested(Action), required=True)
    transcodes = fields.Dict(keys=fields.String(), values=fields.List(fields.Nested(TranscodeRung)),
                             metadata={"description": "uploads: video id → its transcodes"})

    @pre_dump
    def _shape(self, doc: dict[str, Any], **_: Any) -> dict[str, Any]:
        doc = {**doc, "replays": doc.get("replays") or 0, "refs": doc.get("refs") or {}}
        if isinstance(doc.get("transcodes"), dict):
            doc["transcodes"] = {video: [{**state, "rung": rung} for rung, state in rungs.items()]
                                 for video, rungs in doc["transcodes"].items()}
        return doc


class ReplayAccepted(Schema):
    event_id = fields.String(required=True)
    job_id = fields.String(required=True, metadata={"description": "the RQ job that processes it again"})
    skipped = fields.List(fields.Nested(lambda: Skipped()), metadata={
        "description": "its actions not run again, and why (an outcome unknown)"})


class EventBrief(Schema):
    id = fields.String(required=True)
    source = fields.String(required=True)
    type = fields.String(required=True)
    status = fields.String(required=True)
    received_at = fields.Float(required=True)


class FailedItem(Schema):
    id = fields.String(required=True, metadata={"description": "action id, or RQ job id of an event job"})
    kind = fields.String(required=True, allow_none=True, metadata={"description": "event.process for an event job"})
    event_id = fields.String(required=True, allow_none=True)
    status = fields.String(required=True, allow_none=True)
    attempts = fields.Integer(required=True, allow_none=True)
    failed_at = fields.Float(required=True, allow_none=True)
    last_error = fields.Nested(ActionError, required=True, allow_none=True)
    params = fields.Dict(required=True, metadata={"description": "secrets masked"})
    requeueable = fields.Boolean(required=True, metadata={"description": "its RQ job is still in the failed "
                                                                         "registry (never if its outcome is unknown)"})
    outcome = fields.String(allow_none=True, metadata={
        "enum": ["unknown", None], "description": "unknown: the vendor may have done it (a start whose "
                                                  "answer was lost); a requeue or replay skips it"})
    replaced_by = fields.String(allow_none=True, metadata={"description": "the start action that started it again"})
    resolve = fields.String(allow_none=True, metadata={"description": "what to check, and what to do then"})
    event = fields.Nested(EventBrief, required=True, allow_none=True)


class FailedList(Schema):
    items = fields.List(fields.Nested(FailedItem), required=True)
    total = fields.Integer(required=True, metadata={"description": "matching items, before the limit"})


class Skipped(Schema):
    id = fields.String(required=True)
    reason = fields.String(required=True)


class RequeueResult(Schema):
    requeued = fields.List(fields.String(), required=True)
    skipped = fields.List(fields.Nested(Skipped), required=True)


class ActionsQueued(Schema):
    action_ids = fields.List(fields.String(), required=True)


class ActionQueued(Schema):
    action_id = fields.String(required=True)


class LiveStartedAgain(Schema):
    action_id = fields.String(required=True, metadata={"description": "the NEW start action"})
    replaces = fields.String(required=True, metadata={"description": "the failed start it replaces"})
    room_id = fields.String(required=True)
    message = fields.String(required=True, metadata={"description": "what was done, in words"})


class FinishedReply(Schema):
    reply_id = fields.String(required=True)
    at = fields.Float(required=True)


class Timeline(Schema):
    room_id = fields.String()
    scene_script_name = fields.String()
    shoot_script_sequence_no = fields.String()
    shoot_script_title = fields.String()
    script_event_id = fields.String()
    script_received_at = fields.Float()
    output_url = fields.String()
    started_at = fields.Float()
    start_action = fields.String()
    finished_replies = fields.List(fields.Nested(FinishedReply), required=True)


class StreamState(Schema):
    state = fields.String(required=True)
    received_at = fields.Float(required=True)
    event_id = fields.String(required=True)
    job_id = fields.String(allow_none=True)
    output_url = fields.String()


class Stream(Schema):
    room_id = fields.String(required=True, allow_none=True)
    latest = fields.Nested(StreamState, required=True, allow_none=True)
    history = fields.List(fields.Nested(StreamState), required=True,
                          metadata={"description": "every state of the job's room, oldest first; job_id while "
                                                   "the event is kept"})


class ConverterState(Schema):
    auto_push_stream = fields.Boolean()
    state = fields.String()
    event_id = fields.String()
    applied_at = fields.Float()
    binding = fields.String()
    switches = fields.Integer()

    @pre_dump
    def _flag(self, state: dict[str, Any], **_: Any) -> dict[str, Any]:
        """Kept as "1"/"0" in Redis; Marshmallow's Boolean does not convert on dump."""
        if "auto_push_stream" in state:
            return {**state, "auto_push_stream": state["auto_push_stream"] == "1"}
        return state


class Converter(Schema):
    binding = fields.String(required=True)
    converter_id = fields.String(required=True, allow_none=True)
    state = fields.Nested(ConverterState, required=True, metadata={"description": "what we last applied"})


class LiveJob(Schema):
    job_id = fields.String(required=True)
    timeline = fields.Nested(Timeline, required=True)
    stream = fields.Nested(Stream, required=True)
    converters = fields.List(fields.Nested(Converter), required=True)


# --- what the console shows, for scripts too (GET /api/overview, /api/streams, ...) -------------

class LimitQuery(Strict):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class VideosQuery(LimitQuery):
    state = fields.String(validate=validate.OneOf(("failed", "running", "done")), metadata={
        "description": "failed: a rung failed, timed out or was deleted; running: not all final; done: all succeeded"})


class MinuteCounts(Schema):
    minute = fields.Float(required=True, metadata={"description": "the minute's start, Unix seconds"})
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                         metadata={"description": "\"source|outcome\" -> callbacks (outcome: accepted duplicate "
                                                  "ignored spooled rejected unavailable error)"})


class QueueFigures(Schema):
    name = fields.String(required=True)
    depth = fields.Integer(required=True, metadata={"description": "jobs waiting"})
    oldest_age = fields.Float(required=True, metadata={"description": "seconds the oldest waiting job has waited"})
    scheduled = fields.Integer(required=True)
    started = fields.Integer(required=True)
    failed = fields.Integer(required=True, metadata={"description": "in RQ's failed registry"})


class WorkerFigures(Schema):
    name = fields.String(required=True)
    hostname = fields.String(required=True, allow_none=True)
    pid = fields.Integer(required=True, allow_none=True)
    state = fields.String(required=True)
    queues = fields.List(fields.String(), required=True)
    last_heartbeat = fields.Float(required=True, allow_none=True)


class Overview(Schema):
    at = fields.Float(required=True)
    redis_up = fields.Boolean(required=True)
    spool_depth = fields.Integer(required=True, metadata={"description": "this web host's spool"})
    traffic = fields.List(fields.Nested(MinuteCounts), required=True,
                          metadata={"description": "callbacks per minute, the last hour, oldest first"})
    rejected_by_reason = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True,
                                     metadata={"description": "refused callbacks in the last hour by reason"})
    queues = fields.List(fields.Nested(QueueFigures), required=True)
    workers = fields.List(fields.Nested(WorkerFigures), required=True)
    failed = fields.Integer(required=True, metadata={"description": "actions failed for good + event jobs out "
                                                                    "of retries"})
    streams_live = fields.Integer(required=True)


class StreamNow(Schema):
    room_id = fields.String(required=True)
    job_id = fields.String(allow_none=True)
    output_url = fields.String(allow_none=True)
    state = fields.String(required=True)
    at = fields.Float(required=True, metadata={"description": "when the state was sent (or received)"})
    current = fields.Boolean(metadata={"description": "the room's latest state"})
    event_id = fields.String(allow_none=True)


class StreamList(Schema):
    streams = fields.List(fields.Nested(StreamNow), required=True,
                          metadata={"description": "live ones (CONNECTING CONNECTED RECONNECTING) first, newest first"})


class VideoTranscodes(Schema):
    video_id = fields.String(required=True)
    state = fields.String(required=True, metadata={"enum": ["failed", "running", "done"]})
    updated_at = fields.Float(required=True)
    rungs = fields.List(fields.Nested(TranscodeRung), required=True)


class VideoList(Schema):
    videos = fields.List(fields.Nested(VideoTranscodes), required=True,
                         metadata={"description": "failed first, then running, then done; newest change first"})


class Rejected(Schema):
    at = fields.Float(required=True)
    source = fields.String(required=True)
    path = fields.String(required=True, metadata={"description": "never the query string (it may hold a token)"})
    status = fields.Integer(required=True)
    reason = fields.String(required=True, metadata={"description": "the check that failed, or the field paths "
                                                                   "that broke the schema; never a secret"})
    remote_addr = fields.String(required=True)


class RejectedList(Schema):
    items = fields.List(fields.Nested(Rejected), required=True)


class AuditEntry(Schema):
    at = fields.Float(required=True)
    who = fields.String(required=True, metadata={"description": "the admin token's name"})
    action = fields.String(required=True, metadata={"description": "replay, requeue, live.start, koophone.apply"})
    via = fields.String(required=True, metadata={"enum": ["console", "api"]})
    detail = fields.Dict(required=True)


class AuditList(Schema):
    items = fields.List(fields.Nested(AuditEntry), required=True)


class VendorStatus(Schema):
    vendor = fields.String(required=True, metadata={"enum": ["muducloud", "flighthub", "koophone", "metastudio"]})
    paused = fields.Boolean(required=True)
    paused_at = fields.Float(allow_none=True, metadata={"description": "Unix time of the pause"})
    paused_by = fields.String(allow_none=True, metadata={"description": "who paused it (token name, or CLI user)"})
    reason = fields.String(allow_none=True)
    held = fields.Integer(required=True, metadata={"description": "actions waiting for the resume"})
    rate_limit_per_second = fields.Float(required=True, metadata={
        "description": "calls per second to the vendor from the whole fleet (0: no limit); set in its config section"})


class VendorList(Schema):
    items = fields.List(fields.Nested(VendorStatus), required=True)


class VendorResumed(VendorStatus):
    released = fields.List(fields.String(), required=True, metadata={
        "description": "the held actions queued again, in the order they were held (= the order they run)"})


class VendorPauseRequest(Strict):
    reason = fields.String(validate=validate.Length(max=500), load_default=None, allow_none=True)

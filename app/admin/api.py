"""The admin API under /api/: look at events, failures, live jobs and transcodes; replay, requeue,
apply a KooPhone profile, start a live job.

Every call needs ``Authorization: Bearer <token>``, ``[admin] token`` or one of ``[admin] tokens``
(the audit log names which); with no token configured every /api/ call is 401 (fail closed).
Actions (replay, requeue, live start, start again, KooPhone apply) go to the audit log. Each
operation is the same ``workers.ops`` function the CLI runs, so
the two cannot drift apart. Client mistakes are 400/404/409/413/415 JSON, never a 500.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, request
from marshmallow import Schema, ValidationError
from redis import Redis, RedisError

from app.admin import audit, dashboard, schemas
from app.core.body import Unsupported, decode_body
from app.core.config import Settings
from app.core.fields import flatten_errors
from app.web import rejections
from app.web.receive import error_response, json_response, read_body
from workers import live, ops, vendor_control

bp = Blueprint("admin", __name__, url_prefix="/api")

# Built once: loading and dumping use these instances.
EVENTS_QUERY, FAILED_QUERY = schemas.EventsQuery(), schemas.FailedQuery()
TRANSCODES_QUERY = schemas.TranscodesQuery()
REQUEUE, KOOPHONE_APPLY = schemas.RequeueRequest(), schemas.KooPhoneApplyRequest()
LIVE_START, LIVE_START_AGAIN = schemas.LiveStartRequest(), schemas.LiveStartAgainRequest()
EVENT_PAGE, EVENT_DETAIL = schemas.EventPage(), schemas.EventDetail()
FAILED_LIST, LIVE_JOB = schemas.FailedList(), schemas.LiveJob()


class _BadBody(Exception):
    """A request body that is not a JSON object: 415 (not JSON at all) or 400."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _runtime() -> tuple[Redis, Settings]:
    runtime = current_app.extensions["mediahook"]
    return runtime.store.redis, runtime.settings


def token_ok(header: str | None, expected: str | None) -> bool:
    """A ``Bearer`` header carrying the configured token. Compares digests, so the time taken
    tells nothing about the token, not even its length; fails closed without one."""
    if not expected or not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    digest = hashlib.sha256
    return hmac.compare_digest(digest(given.strip().encode("utf-8", "surrogateescape")).digest(),
                               digest(expected.encode("utf-8")).digest())


def token_owner(given: str | None, settings: Settings) -> str | None:
    """The name of the admin token ``given`` is (``[admin] token`` is "admin"), or None. Every
    configured token is compared, so the time taken does not tell which one matched."""
    if not given:
        return None
    found = None
    for name, token in settings.admin_tokens:
        if token_ok("Bearer " + given, token) and found is None:
            found = name
    return found


def _bearer(header: str | None) -> str | None:
    scheme, _, given = (header or "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" and given.strip() else None


def _audit(action: str, **detail: Any) -> None:
    audit.record(_runtime()[0], g.get("admin_who") or "?", action, "api", **detail)


@bp.before_app_request
def _authenticate() -> Response | None:
    # An app-wide hook, so unknown paths and wrong methods under /api/ are 401 too: without
    # the token, nothing about the API is revealed.
    if request.path != "/api" and not request.path.startswith("/api/"):
        return None
    who = token_owner(_bearer(request.headers.get("Authorization")), _runtime()[1])
    if who is not None:
        g.admin_who = who
        return None
    response = error_response(401, "unauthorized")
    response.headers["WWW-Authenticate"] = 'Bearer realm="mediahook admin"'
    return response


@bp.errorhandler(ValidationError)
def _invalid(exc: ValidationError) -> Response:
    message = "invalid query" if request.method == "GET" else "invalid payload"
    return error_response(400, message, errors=flatten_errors(exc.normalized_messages()))


@bp.errorhandler(_BadBody)
def _bad_body(exc: _BadBody) -> Response:
    return exc.response


@bp.errorhandler(RedisError)
def _redis_down(exc: RedisError) -> Response:
    current_app.logger.warning("admin API: Redis unavailable (%s)", exc.__class__.__name__)
    return error_response(503, "Redis is unavailable; retry later")


def _query(schema: Schema) -> dict[str, Any]:
    return schema.load(request.args.to_dict())


def _body(schema: Schema) -> dict[str, Any]:
    body = read_body(request, _runtime()[1].max_body_bytes)
    try:
        payload = decode_body(body, accept_base64=False, mimetype=request.mimetype)
    except Unsupported as exc:  # 415, or 400 for a body sent as JSON that does not parse
        raise _BadBody(error_response(exc.status, str(exc), **exc.extra())) from None
    if not isinstance(payload, dict):
        raise _BadBody(error_response(400, "invalid payload", errors={"_body": ["Must be a JSON object."]}))
    return schema.load(payload)


# --- events ---------------------------------------------------------------------------------

@bp.get("/events")
def list_events() -> Response:
    q = _query(EVENTS_QUERY)
    redis, _ = _runtime()
    events, position = ops.list_events(
        redis, before=q.pop("cursor", None), since=q.pop("since", None), until=q.pop("until", None),
        limit=q.pop("limit"), **q)
    return json_response(200, EVENT_PAGE.dump({"events": events, "next_cursor": position}))


@bp.get("/events/<event_id>")
def show_event(event_id: str) -> Response:
    doc = ops.event_details(_runtime()[0], event_id)
    if doc is None:
        return error_response(404, f"no event {event_id} (unknown, or past its retention)")
    return json_response(200, EVENT_DETAIL.dump(doc))


@bp.post("/events/<event_id>/replay")
def replay_event(event_id: str) -> Response:
    redis, settings = _runtime()
    skipped: list[dict[str, str]] = []
    try:
        job_id = ops.replay(redis, event_id, settings, skipped=skipped)
    except LookupError as exc:
        return error_response(404, str(exc))
    _audit("replay", event_id=event_id, job_id=job_id)
    answer = {"event_id": event_id, "job_id": job_id, **({"skipped": skipped} if skipped else {})}
    return json_response(202, schemas.ReplayAccepted().dump(answer))


# --- failures -------------------------------------------------------------------------------

@bp.get("/failed")
def list_failed() -> Response:
    q = _query(FAILED_QUERY)
    limit = q.pop("limit")
    items = ops.failed_items(_runtime()[0], **q)
    return json_response(200, FAILED_LIST.dump({"items": items[:limit], "total": len(items)}))


@bp.get("/actions/<action_id>")
def show_action(action_id: str) -> Response:
    doc = ops.action(_runtime()[0], action_id)
    if doc is None:
        return error_response(404, f"no action {action_id}")
    return json_response(200, schemas.Action().dump(doc))


@bp.post("/failed/requeue")
def requeue_failed() -> Response:
    data = _body(REQUEUE)
    redis, settings = _runtime()
    if "id" in data:
        items = ops.failed_items(redis, ids=[data["id"]])
        if not items:
            return error_response(404, f"no failed action or event job {data['id']}")
    else:
        items = ops.failed_items(redis, **data.get("filter", {}))
    result = ops.requeue_failed(redis, settings, items)
    _audit("requeue", request={k: v for k, v in data.items()}, requeued=len(result["requeued"]),
           skipped=len(result["skipped"]), ids=result["requeued"][:50])
    return json_response(200, schemas.RequeueResult().dump(result))


# --- live jobs, transcodes ------------------------------------------------------------------

@bp.get("/live/jobs/<job_id>")
def show_live_job(job_id: str) -> Response:
    redis, settings = _runtime()
    doc = ops.live_job(redis, settings, job_id)
    if doc is None:
        return error_response(404, f"nothing known of live job {job_id}")
    return json_response(200, LIVE_JOB.dump(doc))


@bp.post("/live/jobs")
def start_live_job() -> Response:
    data = _body(LIVE_START)
    redis, settings = _runtime()
    try:
        action_id = live.queue_start(redis, settings, data["room_id"], data["output_url"], data["stream_key"])
    except ValueError as exc:  # what the configuration lacks (no [metastudio], no public_base_url)
        return error_response(409, str(exc))
    _audit("live.start", room_id=data["room_id"], action_id=action_id)  # never the stream key
    return json_response(202, schemas.ActionQueued().dump({"action_id": action_id}))


@bp.post("/live/starts/<action_id>/start-again")
def start_live_again(action_id: str) -> Response:
    # The body is optional (a stream key, only when the old one has expired): none means {}.
    data = _body(LIVE_START_AGAIN) if request.content_length or request.headers.get("Transfer-Encoding") else {}
    redis, settings = _runtime()
    try:
        done = live.start_again(redis, settings, action_id, data.get("stream_key"))
    except LookupError as exc:
        return error_response(404, str(exc))
    except ValueError as exc:  # not a failed live start, already started again, or the configuration lacks
        return error_response(409, str(exc))
    _audit("live.start-again", action_id=done["action_id"], replaces=action_id, room_id=done["room_id"])
    return json_response(202, schemas.LiveStartedAgain().dump(done))


@bp.get("/transcodes")
def list_transcodes() -> Response:
    video_id = _query(TRANSCODES_QUERY)["video_id"]
    rungs = ops.transcodes(_runtime()[0], video_id)
    if not rungs:
        return error_response(404, f"no transcodes for video {video_id}")
    return json_response(200, schemas.Transcodes().dump({"video_id": video_id, "rungs": rungs}))


# --- what the console shows -------------------------------------------------------------------

@bp.get("/overview")
def overview() -> Response:
    redis, settings = _runtime()
    return json_response(200, schemas.Overview().dump(dashboard.overview(redis, settings)))


def _latest(schema: Schema, key: str, read: Callable[..., list[dict[str, Any]]]) -> Response:
    """A list read with the request's ``limit`` (newest first), under ``key``."""
    limit = _query(schemas.LimitQuery())["limit"]
    return json_response(200, schema.dump({key: read(_runtime()[0], limit=limit)}))


@bp.get("/streams")
def list_streams() -> Response:
    return _latest(schemas.StreamList(), "streams", dashboard.streams_now)


@bp.get("/transcodes/videos")
def list_videos() -> Response:
    q = _query(schemas.VideosQuery())
    videos = dashboard.videos(_runtime()[0], state=q.get("state"), limit=q["limit"])
    return json_response(200, schemas.VideoList().dump({"videos": videos}))


@bp.get("/rejected")
def list_rejected() -> Response:
    return _latest(schemas.RejectedList(), "items", rejections.recent)


@bp.get("/audit")
def list_audit() -> Response:
    return _latest(schemas.AuditList(), "items", audit.recent)


# --- vendor controls ------------------------------------------------------------------------

def _vendor(name: str) -> str:
    """``name`` if it is a vendor we call; else 404, naming those there are."""
    if name not in vendor_control.VENDORS:
        abort(404, description=f"no vendor {name}; known: {', '.join(vendor_control.VENDORS)}")
    return name


@bp.get("/vendors")
def list_vendors() -> Response:
    redis, settings = _runtime()
    return json_response(200, schemas.VendorList().dump({"items": vendor_control.status(redis, settings=settings)}))


@bp.get("/vendors/<vendor>")
def show_vendor(vendor: str) -> Response:
    redis, settings = _runtime()
    return json_response(200, schemas.VendorStatus().dump(vendor_control.status(redis, _vendor(vendor), settings)))


@bp.post("/vendors/<vendor>/pause")
def pause_vendor(vendor: str) -> Response:
    redis, settings = _runtime()
    _vendor(vendor)
    data = _body(schemas.VendorPauseRequest()) if request.content_length else {"reason": None}
    doc = vendor_control.pause(redis, vendor, by=g.get("admin_who"), reason=data["reason"], settings=settings)
    _audit("vendor.pause", vendor=vendor, reason=data["reason"])
    return json_response(200, schemas.VendorStatus().dump(doc))


@bp.post("/vendors/<vendor>/resume")
def resume_vendor(vendor: str) -> Response:
    redis, settings = _runtime()
    doc = vendor_control.resume(redis, _vendor(vendor), settings=settings)
    _audit("vendor.resume", vendor=vendor, released=len(doc["released"]))
    return json_response(200, schemas.VendorResumed().dump(doc))


# --- KooPhone -------------------------------------------------------------------------------

@bp.post("/koophone/apply")
def koophone_apply() -> Response:
    data = _body(KOOPHONE_APPLY)
    redis, settings = _runtime()
    if settings.koophone is None:
        return error_response(409, "[koophone] is not configured")
    if data["profile"] not in settings.koophone.profiles:
        raise ValidationError(f"No such profile; known: {sorted(settings.koophone.profiles)}.", "profile")
    try:
        action_ids = ops.koophone_apply(redis, settings, data["profile"], data["instance_ids"])
    except ValueError as exc:  # ops' own checks of the input, should they ever go beyond the schema's
        return error_response(400, "invalid payload", errors={"_body": [str(exc)]})
    _audit("koophone.apply", profile=data["profile"], instances=len(data["instance_ids"]), action_ids=action_ids)
    return json_response(202, schemas.ActionsQueued().dump({"action_ids": action_ids}))

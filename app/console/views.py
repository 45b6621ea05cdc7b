"""The console's pages. Reads go through workers.ops and app.dashboard (as the admin API's do);
actions (replay, requeue) through the same ops functions, each written to the audit log."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, current_app, g, make_response, redirect, render_template, request, url_for
from marshmallow import ValidationError
from redis import Redis, RedisError

from app.admin import audit, dashboard, schemas
from app.admin.api import token_owner
from app.console import auth
from app.console.chart import traffic_chart
from app.core.config import Settings
from app.core.events import EVENT_PREFIX
from app.core.fields import flatten_errors
from app.core.redact import redact_body
from app.sources import SOURCES
from app.web import rejections
from workers import actions, live, ops, vendor_control

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates",
               static_folder="static", static_url_path="/static")

PAGE_SIZE = 50
# Body search reads each candidate's body: it stops after this many events looked at (newest
# first, after the other filters), and offers a cursor to go on from there.
SEARCH_SCAN_LIMIT = 2000
EVENT_FILTERS = ("source", "type", "status", "room_id", "job_id", "video_id", "since", "until")
FAILED_FILTERS = ("kind", "event_id", "vendor")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")



def _runtime() -> tuple[Redis, Settings]:
    runtime = current_app.extensions["mediahook"]
    return runtime.store.redis, runtime.settings


# --- session, CSRF, headers ---------------------------------------------------------------------

@bp.before_request
def _require_session() -> Response | None:
    if request.endpoint in ("console.login", "console.static"):
        return None
    session = auth.session_of(request, _runtime()[1])
    if session is None:
        if request.method == "POST" or request.path.endswith(".part"):
            return _page("error.html", 401, message="Your session has ended: sign in again.")
        return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
    g.console_session = session
    if request.method == "POST" and not auth.csrf_ok(request, session):
        current_app.logger.warning("console: POST %s refused: CSRF token missing or wrong (%s)",
                                   request.path, session.who)
        return _page("error.html", 403, message="Refused: the form's CSRF token is missing or wrong. "
                                                "Reload the page and try again.")
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(RedisError)
def _redis_down(exc: RedisError) -> Response:
    current_app.logger.warning("console: Redis unavailable (%s)", exc.__class__.__name__)
    return _page("error.html", 503, message="Redis is unavailable; this page will work again when it is back.")


@bp.app_template_filter("when")
def _when(value: Any) -> str:
    """Unix seconds as UTC date and time (the console's one time zone)."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(value))) + "Z"
    except (TypeError, ValueError):
        return "—"


@bp.app_template_filter("ago")
def _ago(value: Any) -> str:
    try:
        seconds = max(0, time.time() - float(value))
    except (TypeError, ValueError):
        return "—"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _page(template: str, status: int = 200, **context: Any) -> Response:
    session = g.get("console_session")
    return make_response(render_template(template, who=session.who if session else None,
                                         csrf=session.csrf if session else "", **context), status)


def _page_and_part(rule: str, name: str, context: Callable[..., dict[str, Any]], part_rule: str | None = None) -> None:
    """The page ``<name>.html`` at ``rule`` and the fragment its script re-fetches, ``_<name>.html``
    at ``<rule>.part`` (endpoint ``<name>_part``), both rendered from one context."""
    bp.add_url_rule(rule, name, lambda **args: _page(f"{name}.html", **context(**args)))
    bp.add_url_rule(part_rule or f"{rule}.part", f"{name}_part",
                    lambda **args: _page(f"_{name}.html", **context(**args)))


def _audit(action: str, **detail: Any) -> None:
    audit.record(_runtime()[0], g.console_session.who, action, "console", **detail)


def _back(endpoint: str, notice: str, **values: Any) -> Response:
    return redirect(url_for(endpoint, notice=notice, **values), code=303)


# --- login ----------------------------------------------------------------------------------------

def _safe_next(value: str | None) -> str:
    return value if value and value.startswith("/console/") and not value.startswith("//") else url_for(
        "console.overview")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    _, settings = _runtime()
    error = None
    if request.method == "POST":
        if not auth.login_form_ok(request, settings):
            error = "The form expired or came from elsewhere: try again."
        else:
            who = token_owner(request.form.get("token", "").strip(), settings)
            if who is not None:
                response = redirect(_safe_next(request.form.get("next")), code=303)
                auth.start_session(response, request, settings, who)
                current_app.logger.info("console: %s signed in from %s", who, request.remote_addr)
                return response
            current_app.logger.warning("console: a sign-in with a wrong token from %s", request.remote_addr)
            error = "Not a configured admin token." if settings.admin_tokens else (
                "No admin token is configured ([admin] token or [admin] tokens): the console is closed.")
    cookies: dict[str, str] = {}
    form_token = auth.login_form_token(request, cookies, settings)
    response = _page("login.html", 401 if error else 200, error=error, form_token=form_token,
                     next=_safe_next(request.values.get("next")), configured=bool(settings.admin_tokens))
    auth.set_login_cookie(response, request, cookies[auth.LOGIN_COOKIE])
    return response


@bp.post("/logout")
def logout() -> Response:
    current_app.logger.info("console: %s signed out", g.console_session.who)
    response = redirect(url_for("console.login"), code=303)
    auth.end_session(response)
    return response


# --- overview --------------------------------------------------------------------------------------

def _overview_context() -> dict[str, Any]:
    redis, settings = _runtime()
    doc = dashboard.overview(redis, settings)
    return {"o": doc, "chart": traffic_chart(doc["traffic"])}


_page_and_part("/", "overview", _overview_context, part_rule="/overview.part")


# --- events ----------------------------------------------------------------------------------------

def _event_query() -> tuple[dict[str, Any], dict[str, str], str]:
    """(loaded filters for ops.list_events, the form's raw values, the body search text)."""
    raw = {k: v.strip() for k in (*EVENT_FILTERS, "cursor") if (v := request.args.get(k, ""))}
    q = request.args.get("q", "").strip()[:200]
    loaded = schemas.EventsQuery().load({**{k: v for k, v in raw.items()}, "limit": PAGE_SIZE})
    return loaded, raw, q


def _search(redis: Redis, loaded: dict[str, Any], q: str) -> tuple[list[dict], Any, int]:
    """Events whose body contains ``q`` (case-insensitive) as received and still once secrets are
    masked; looks at SEARCH_SCAN_LIMIT events at most. Returns (events, cursor to go on from, looked at)."""
    needle = q.lower()
    position = loaded.pop("cursor", None)
    since, until, limit = loaded.pop("since", None), loaded.pop("until", None), loaded.pop("limit")
    found: list[dict] = []
    looked = 0
    while looked < SEARCH_SCAN_LIMIT:
        batch, next_position = ops.list_events(redis, before=position, since=since, until=until,
                                                  limit=min(200, SEARCH_SCAN_LIMIT - looked), **loaded)
        pipe = redis.pipeline(transaction=False)
        for doc in batch:
            pipe.hget(EVENT_PREFIX + doc["id"], "body")
        for doc, body in zip(batch, pipe.execute() if batch else [], strict=True):
            looked += 1
            position = (doc["received_at"], doc["id"])
            # The raw body first (cheap); a hit is confirmed on the masked form, so a secret never matches.
            if needle.encode() in (body or b"").lower() and needle in json.dumps(
                    redact_body(body or b""), ensure_ascii=False).lower():
                found.append(doc)
                if len(found) == limit:
                    return found, position, looked
        if next_position is None:
            return found, None, looked
        position = next_position
    return found, position, looked


def _events(redis: Redis) -> dict[str, Any]:
    loaded, raw, q = _event_query()
    if q:
        events, position, looked = _search(redis, dict(loaded), q)
    else:
        position_in = loaded.pop("cursor", None)
        events, position = ops.list_events(redis, before=position_in, since=loaded.pop("since", None),
                                              until=loaded.pop("until", None), limit=loaded.pop("limit"), **loaded)
        looked = None
    cursor = schemas.Cursor()._serialize(position, None, None)
    keep = {k: v for k, v in raw.items() if k != "cursor"}
    if q:
        keep["q"] = q
    return {"events": events, "next_url": url_for("console.events", **keep, cursor=cursor) if cursor else None,
            "filters": raw, "q": q, "looked": looked, "search_limit": SEARCH_SCAN_LIMIT,
            "sources": list(SOURCES), "statuses": schemas.EVENT_STATUSES, "first_page": "cursor" not in raw,
            "part_url": url_for("console.events_part", **keep)}


@bp.get("/events")
def events() -> Response:
    try:
        context = _events(_runtime()[0])
    except ValidationError as exc:
        return _page("events.html", 400, events=[], filters=request.args, q=request.args.get("q", ""),
                     errors=flatten_errors(exc.normalized_messages()), sources=list(SOURCES),
                     statuses=schemas.EVENT_STATUSES, next_url=None, looked=None, first_page=True, part_url=None)
    return _page("events.html", tail=request.args.get("tail") == "1", **context)


@bp.get("/events.part")
def events_part() -> Response:
    """The first page's rows, for live tail."""
    try:
        context = _events(_runtime()[0])
    except ValidationError:
        return _page("_event_rows.html", 400, events=[])
    return _page("_event_rows.html", **context)


@bp.get("/events/<event_id>")
def event(event_id: str) -> Response:
    doc = ops.event_details(_runtime()[0], event_id)
    if doc is None:
        return _page("error.html", 404, message=f"No event {event_id} (unknown, or past its retention).")
    body = json.dumps(doc["body"], indent=2, ensure_ascii=False, sort_keys=True) if not isinstance(
        doc["body"], str) else doc["body"]
    return _page("event.html", e=doc, body=body, notice=request.args.get("notice"))


@bp.post("/events/<event_id>/replay")
def replay(event_id: str) -> Response:
    redis, settings = _runtime()
    try:
        job_id = ops.replay(redis, event_id, settings)
    except LookupError as exc:
        return _page("error.html", 404, message=str(exc))
    _audit("replay", event_id=event_id, job_id=job_id)
    return _back("console.event", f"Replay queued as job {job_id}.", event_id=event_id)


# --- failed ----------------------------------------------------------------------------------------

def _outcome_unknown(redis: Redis, items: list[dict]) -> set[str]:
    """Ids of actions whose effect at the vendor is unknown (``outcome`` = ``unknown``): never
    requeued from here; someone checks at the vendor first."""
    pipe = redis.pipeline(transaction=False)
    for item in items:
        pipe.hget("mh:action:" + item["id"], "outcome")
    return {i["id"] for i, o in zip(items, pipe.execute() if items else [], strict=True) if o == b"unknown"}


def _failed_filter() -> dict[str, str]:
    loaded = schemas.FailedQuery().load({k: v.strip() for k in FAILED_FILTERS if (v := request.values.get(k, ""))})
    loaded.pop("limit", None)
    return loaded


@bp.get("/failed")
def failed() -> Response:
    redis, _ = _runtime()
    try:
        flt = _failed_filter()
    except ValidationError as exc:
        return _page("error.html", 400, message=f"Bad filter: {flatten_errors(exc.normalized_messages())}")
    items = ops.failed_items(redis, **flt)
    unknown = _outcome_unknown(redis, items)
    return _page("failed.html", items=[i for i in items if i["id"] not in unknown],
                 unknown=[i for i in items if i["id"] in unknown], filters=flt, notice=request.args.get("notice"))


@bp.post("/failed/requeue")
def requeue() -> Response:
    """Requeue one (``id``), the selected (``ids``), or all matching the filter (``all``): first a
    confirmation page saying how many, then (``confirm=1``) the requeue itself."""
    redis, settings = _runtime()
    mode = request.values.get("mode", "")  # "one" comes in the button's formaction query
    if mode == "one":
        items = ops.failed_items(redis, ids=[request.values.get("id", "")])
    elif mode == "selected":
        items = ops.failed_items(redis, ids=request.form.getlist("ids")[:1000])
    elif mode == "all":
        try:
            items = ops.failed_items(redis, **_failed_filter())
        except ValidationError as exc:
            return _page("error.html", 400, message=f"Bad filter: {flatten_errors(exc.normalized_messages())}")
    else:
        return _page("error.html", 400, message="Say what to requeue: one, the selected, or all matching.")
    unknown = _outcome_unknown(redis, items)
    items = [i for i in items if i["id"] not in unknown]
    if not items:
        return _back("console.failed", "Nothing to requeue" + (
            f" ({len(unknown)} with an unknown outcome left alone)." if unknown else "."))
    if request.form.get("confirm") != "1":
        return _page("confirm.html", items=items, unknown=len(unknown), mode=mode, form=request.values)
    result = ops.requeue_failed(redis, settings, items)
    _audit("requeue", mode=mode, requeued=len(result["requeued"]), skipped=len(result["skipped"]),
           ids=result["requeued"][:50])
    notice = f"Requeued {len(result['requeued'])}."
    if result["skipped"]:
        notice += f" Skipped {len(result['skipped'])}: " + "; ".join(
            f"{x['id']}: {x['reason']}" for x in result["skipped"][:5])
    return _back("console.failed", notice)


@bp.post("/live/starts/<action_id>/start-again")
def start_again(action_id: str) -> Response:
    """One NEW start request in place of a failed live start (whose outcome is unknown): after a
    confirmation that says what it does. Never done by a requeue or a replay."""
    redis, settings = _runtime()
    doc = ops.action(redis, action_id)
    if doc is None or doc.get("kind") != actions.LIVE_START.kind:
        return _page("error.html", 404, message=f"No live start {action_id}.")
    if request.form.get("confirm") != "1":
        return _page("start_again.html", action=doc, room_id=(doc.get("params") or {}).get("room_id", "?"))
    stream_key = request.form.get("stream_key", "").strip() or None
    try:
        done = live.start_again(redis, settings, action_id, stream_key)
    except LookupError as exc:
        return _page("error.html", 404, message=str(exc))
    except ValueError as exc:  # not failed, already started again, no stream key kept, no [metastudio]
        return _back("console.failed", f"Not started again: {exc}")
    _audit("live.start-again", action_id=done["action_id"], replaces=action_id, room_id=done["room_id"])
    return _back("console.failed", done["message"])


# --- live streams ----------------------------------------------------------------------------------

def _streams_context() -> dict[str, Any]:
    streams = dashboard.streams_now(_runtime()[0])
    return {"streams": streams, "live_states": dashboard.LIVE_STATES}


_page_and_part("/streams", "streams", _streams_context)


def _stream_context(room_id: str) -> dict[str, Any]:
    redis, settings = _runtime()
    job_id = request.args.get("job_id") or None
    history = dashboard.stream_history(redis, room_id, job_id)
    job = ops.live_job(redis, settings, job_id) if job_id else None
    phones = []
    if settings.koophone is not None:
        phones = [{"instance_ids": b.instance_ids, "on_state": b.on_state}
                  for b in settings.koophone.bindings if b.room_id == room_id]
    return {"room_id": room_id, "job_id": job_id, "history": history, "job": job, "phones": phones,
            "applied": _profiles_applied(redis, history),
            "part_url": url_for("console.stream_part", room_id=room_id, **({"job_id": job_id} if job_id else {}))}


def _profiles_applied(redis: Redis, history: list[dict[str, Any]], last: int = 20) -> list[dict[str, Any]]:
    """The cloud-phone profiles the room's latest states led to (their KooPhone apply actions), newest first."""

    out = []
    for entry in reversed(history[-last:]):
        for action in actions.event_actions(redis, entry.get("event_id") or ""):
            if actions.action_of(action.get("kind")) == actions.VIDEO_SETTINGS_RECONCILE:
                params = action.get("params") or {}
                # A binding's reconcile names its batch, not its phones: its result counts them.
                instances = len(params.get("instance_ids") or []) or (action.get("result") or {}).get("instances", 0)
                out.append({"state": entry.get("state"), "profile": params.get("profile"),
                            "instances": instances, "status": action.get("status"),
                            "updated_at": action.get("updated_at"), "id": action["id"]})
    return out


_page_and_part("/streams/<room_id>", "stream", _stream_context)


# --- transcodes ------------------------------------------------------------------------------------

def _transcodes_context() -> dict[str, Any]:
    state = request.args.get("state") or None
    if state not in (None, "failed", "running", "done"):
        state = None
    return {"videos": dashboard.videos(_runtime()[0], state=state), "state": state,
            "part_url": url_for("console.transcodes_part", **({"state": state} if state else {}))}


_page_and_part("/transcodes", "transcodes", _transcodes_context)


# --- rejected callbacks, audit log -----------------------------------------------------------------

@bp.get("/rejected")
def rejected() -> Response:
    return _page("rejected.html", items=rejections.recent(_runtime()[0]), keep=rejections.KEEP,
                 max_age_h=rejections.MAX_AGE / 3600)


@bp.get("/rejected.part")
def rejected_part() -> Response:
    return _page("_rejected.html", items=rejections.recent(_runtime()[0]))


@bp.get("/audit")
def audit_log() -> Response:
    return _page("audit.html", items=audit.recent(_runtime()[0]), keep=audit.AUDIT_MAX)


# --- vendors: pause / resume -----------------------------------------------------------------------

@bp.get("/vendors")
def vendors() -> Response:

    redis, settings = _runtime()
    return _page("vendors.html", items=vendor_control.status(redis, settings=settings),
                 notice=request.args.get("notice"))


@bp.post("/vendors/<vendor>/<verb>")
def vendor_control_action(vendor: str, verb: str) -> Response:
    """Pause or resume a vendor (workers/vendor_control.py), audited as from the console."""

    redis, settings = _runtime()
    if vendor not in vendor_control.VENDORS or verb not in ("pause", "resume"):
        return _page("error.html", 404, message=f"no vendor {vendor} / action {verb}")
    if verb == "pause":
        reason = (request.form.get("reason") or "").strip()[:500] or None
        vendor_control.pause(redis, vendor, by=g.console_session.who, reason=reason, settings=settings)
        _audit("vendor.pause", vendor=vendor, reason=reason)
        return _back("console.vendors", f"{vendor} paused: its actions wait until you resume it.")
    released = vendor_control.resume(redis, vendor, settings=settings)["released"]
    _audit("vendor.resume", vendor=vendor, released=len(released))
    return _back("console.vendors", f"{vendor} resumed: {len(released)} held action(s) queued again, in order.")

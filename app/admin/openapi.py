"""The OpenAPI 3 document of the whole HTTP surface, generated with apispec from the Marshmallow
schemas the service itself loads and dumps with (app/sources/* for the hooks, app/admin/schemas.py
for the admin API), and served at /openapi.json without authentication.

tests/test_openapi.py checks every route of the app is documented here and runs schemathesis
against the app with this document.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, Response
from marshmallow import fields

from app.admin import schemas
from app.core.fields import JSONString, Numeric, Text
from app.sources import SOURCES
from app.sources.base import hook_path

TITLE = "mediahook"
VERSION = "1"
OPENAPI_VERSION = "3.0.3"

_INTEGER_TEXT = r"^\s*[+-]?[0-9]+\s*$"
_DECIMAL_TEXT = r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"


def _vendor_fields(self: Any, field: fields.Field, **_: Any) -> dict[str, Any]:
    """How app/core/fields.py's vendor-quirk fields look on the wire."""
    if isinstance(field, Numeric):
        if field.decimals:
            return {"oneOf": [{"type": "number"}, {"type": "string", "pattern": _DECIMAL_TEXT}]}
        return {"oneOf": [{"type": "integer"}, {"type": "string", "pattern": _INTEGER_TEXT}]}
    if isinstance(field, Text):
        return {"oneOf": [{"type": "string"}, {"type": "number"}]}
    if isinstance(field, JSONString):
        name = type(field.schema).__name__
        return {"type": "string", "description": f"JSON text of a {name} object (components/schemas/{name})"}
    return {}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": "Error"}}}


ERRORS = {
    "BadRequest": _error("Valid JSON (or a query) that breaks the schema; `errors` maps each field path to "
                         "its messages, e.g. `message.job_id` or `instance_ids.0`."),
    "Unauthorized": _error("Authentication failed, with no hint which part. For /api/: no or wrong bearer "
                           "token, or no `[admin] token` configured at all (fail closed)."),
    "NotFound": _error("No such id (or past its retention), or no such path."),
    "MethodNotAllowed": {**_error("Wrong method for the path; `Allow` lists the right ones."),
                         "headers": {"Allow": {"schema": {"type": "string"}}}},
    "Conflict": _error("The configuration lacks what the operation needs (e.g. no `[koophone]` or "
                       "`[metastudio]` section, no `public_base_url`)."),
    "PayloadTooLarge": _error("Body over `max_body_bytes` (by Content-Length before reading, and while "
                              "reading chunked bodies)."),
    "UnsupportedMediaType": _error("A body that does not decode: not JSON (nor, for CDNetworks, URL-safe "
                                   "Base64 of JSON), whatever its Content-Type says."),
    "Unavailable": _error("Redis (and, for hooks, the disk spool too) failed: nothing was done; retry."),
}

SECURITY_SCHEMES = {
    "adminBearer": {"type": "http", "scheme": "bearer",
                    "description": "`[admin] token` (or MEDIAHOOK_ADMIN_TOKEN). Without one configured, every "
                                   "/api/ call is 401."},
}

ADMIN = [{"adminBearer": []}]
NO_AUTH: list[dict] = []


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _json(schema: Any, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, responses: dict[Any, Any], *, security: list[dict] = ADMIN, tag: str = "admin",
        body: Any = None, params: list[dict] | None = None, description: str | None = None) -> dict[str, Any]:
    answers = {str(code): _ref(r) if isinstance(r, str) else r for code, r in responses.items()}
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "security": security, "responses": answers}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def _optional_body(op: dict[str, Any]) -> dict[str, Any]:
    op["requestBody"]["required"] = False
    return op


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}}


def _query(schema: type) -> list[dict[str, Any]]:
    return [{"in": "query", "schema": schema}]


ADMIN_ERRORS = {401: "Unauthorized", 503: "Unavailable"}
BODY_ERRORS = {400: "BadRequest", 413: "PayloadTooLarge", 415: "UnsupportedMediaType"}
HOOK_ERRORS = {**BODY_ERRORS, 401: "Unauthorized", 503: "Unavailable"}
HOOK_OK = {200: _json("HookAccepted", "Stored and queued, or stored as a duplicate or as ignored: a 2xx "
                                      "always means the event is kept and will be processed.")}


def _hook_paths() -> dict[str, dict[str, Any]]:
    """Every source endpoint, as its module declares it (``Endpoint``, ``ApiDoc``)."""
    paths = {}
    for name, source in SOURCES.items():
        for endpoint in source.ENDPOINTS:
            op = _op(endpoint.summary, {**HOOK_OK, **HOOK_ERRORS}, security=list(source.API_DOC.security),
                     tag="hooks", body=endpoint.body, description=endpoint.description or None)
            if endpoint.accept_base64:
                op["requestBody"]["content"]["text/plain"] = {
                    "schema": {"type": "string", "description": "URL-safe (or standard) Base64 of the JSON body"}}
            paths[hook_path(name, endpoint.path)] = {"post": op}
    return paths


def _service_paths() -> dict[str, dict[str, Any]]:
    return {
        "/healthz": {"get": _op("The process is up (for load balancers)", {200: _json("Health", "Up")},
                                security=NO_AUTH, tag="service")},
        "/readyz": {"get": _op("Redis answers", {200: _json("Ready", "Ready"),
                                                 503: _json("Ready", "Redis is unreachable (the spool keeps "
                                                                     "taking callbacks)")},
                               security=NO_AUTH, tag="service")},
        "/metrics": {"get": _op("Prometheus metrics", {200: {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}}}}, security=NO_AUTH, tag="service")},
        "/openapi.json": {"get": _op("This document", {200: {
            "description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}},
            security=NO_AUTH, tag="service")},
    }


def _admin_paths() -> dict[str, dict[str, Any]]:
    event_id = _path_param("event_id", "an event id, as a hook answered it")
    return {
        "/api/events": {"get": _op(
            "Events, newest first", {200: _json("EventPage", "A page"), 400: "BadRequest", **ADMIN_ERRORS},
            params=_query(schemas.EventsQuery),
            description="Filters combine (AND). Pages follow `next_cursor`, a stable place in the order "
                        "(received time, then id): events that arrive meanwhile never shift a page.")},
        "/api/events/{event_id}": {"get": _op(
            "An event with its job, actions (attempts, vendor replies and errors) and transcodes; secrets "
            "masked", {200: _json("EventDetail", "The event"), 404: "NotFound", **ADMIN_ERRORS},
            params=[event_id])},
        "/api/events/{event_id}/replay": {"post": _op(
            "Process an event again (safe: actions are idempotent; failed ones are requeued)",
            {202: _json("ReplayAccepted", "Queued"), 404: "NotFound", **ADMIN_ERRORS}, params=[event_id])},
        "/api/failed": {"get": _op(
            "Actions that failed for good and event jobs out of retries, newest first, with their events",
            {200: _json("FailedList", "Failures"), 400: "BadRequest", **ADMIN_ERRORS},
            params=_query(schemas.FailedQuery))},
        "/api/actions/{action_id}": {"get": _op(
            "One action: state, attempts, vendor error, result; secrets masked",
            {200: _json("Action", "The action"), 404: "NotFound", **ADMIN_ERRORS},
            params=[_path_param("action_id", "an action id (from an event, /api/failed or a start)")])},
        "/api/failed/requeue": {"post": _op(
            "Run failed actions or event jobs again: one (`id`), a `filter`, or `all`",
            {200: _json("RequeueResult", "What was requeued, and what could not be"), 404: "NotFound",
             **BODY_ERRORS, **ADMIN_ERRORS}, body="RequeueRequest")},
        "/api/live/jobs": {"post": _op(
            "Start a MetaStudio live job whose callbacks come back here (queued, retried only where safe)",
            {202: _json("ActionQueued", "Queued: see its action"), 409: "Conflict", **BODY_ERRORS,
             **ADMIN_ERRORS}, body="LiveStartRequest")},
        "/api/live/starts/{action_id}/start-again": {"post": _op(
            "Send ONE new start request in place of a failed live start (typically one whose outcome is "
            "unknown), after checking MetaStudio runs no job for it",
            {202: _json("LiveStartedAgain", "Queued: a new start action, recording the one it replaces"),
             404: "NotFound", 409: "Conflict", **BODY_ERRORS, **ADMIN_ERRORS}, body="LiveStartAgainRequest",
            params=[_path_param("action_id", "the failed live start's action id")],
            description="Nothing starts a live job again by itself (not RQ, a requeue or a replay): this is the "
                        "only way. 409 if the action is not a failed live start, or was already started again "
                        "(a start is started again once), or its stream key has expired and none is given. The "
                        "body is optional.")},
        "/api/live/jobs/{job_id}": {"get": _op(
            "A live job: script timeline, its room's stream states, converter state",
            {200: _json("LiveJob", "The job"), 404: "NotFound", **ADMIN_ERRORS},
            params=[_path_param("job_id", "a MetaStudio live job id")])},
        "/api/transcodes": {"get": _op(
            "A video's transcodes per rung: task id, status, progress, target URL",
            {200: _json("Transcodes", "The rungs, lowest first"), 400: "BadRequest", 404: "NotFound",
             **ADMIN_ERRORS}, params=_query(schemas.TranscodesQuery))},
        "/api/overview": {"get": _op(
            "What the console's overview shows: callbacks per minute (last hour), refused ones by reason, "
            "queues, workers, failures, spool, live streams", {200: _json("Overview", "The figures"),
                                                               **ADMIN_ERRORS})},
        "/api/streams": {"get": _op(
            "Streams by latest state: live ones first", {200: _json("StreamList", "Streams"), 400: "BadRequest",
                                                        **ADMIN_ERRORS}, params=_query(schemas.LimitQuery))},
        "/api/transcodes/videos": {"get": _op(
            "Videos with transcodes, by state: failed first", {200: _json("VideoList", "Videos"),
                                                               400: "BadRequest", **ADMIN_ERRORS},
            params=_query(schemas.VideosQuery),
            description="From a bounded scan of the per-video records (at most 5000 keys looked at).")},
        "/api/rejected": {"get": _op(
            "Refused callbacks (400 401 413 415), newest first, with the reason; kept 24 h, at most 1000",
            {200: _json("RejectedList", "Refused callbacks"), 400: "BadRequest", **ADMIN_ERRORS},
            params=_query(schemas.LimitQuery))},
        "/api/audit": {"get": _op(
            "The audit log: who replayed, requeued, applied or started what, newest first (the last 1000)",
            {200: _json("AuditList", "Entries"), 400: "BadRequest", **ADMIN_ERRORS},
            params=_query(schemas.LimitQuery))},
        "/api/vendors": {"get": _op(
            "Each vendor we call: paused or not, actions held, its rate limit", {200: _json("VendorList", "Vendors"),
                                                                                  **ADMIN_ERRORS})},
        "/api/vendors/{vendor}": {"get": _op(
            "One vendor: paused or not, actions held, its rate limit",
            {200: _json("VendorStatus", "The vendor"), 404: "NotFound", **ADMIN_ERRORS},
            params=[_path_param("vendor", "muducloud, flighthub, koophone or metastudio")])},
        "/api/vendors/{vendor}/pause": {"post": _optional_body(_op(
            "Pause a vendor: its actions that start from now on wait (held, in order) until a resume",
            {200: _json("VendorStatus", "Paused (a second pause keeps the first one's time)"), 404: "NotFound",
             **BODY_ERRORS, **ADMIN_ERRORS}, body="VendorPauseRequest",
            params=[_path_param("vendor", "muducloud, flighthub, koophone or metastudio")],
            description="An action already running finishes. Nothing is lost or failed: held actions keep their "
                        "retry budget. The body is optional."))},
        "/api/vendors/{vendor}/resume": {"post": _op(
            "Resume a vendor: its held actions are queued again in the order they were held",
            {200: _json("VendorResumed", "Resumed; `released` lists the actions queued again, in order"),
             404: "NotFound", **ADMIN_ERRORS},
            params=[_path_param("vendor", "muducloud, flighthub, koophone or metastudio")])},
        "/api/koophone/apply": {"post": _op(
            "Apply a [koophone.profiles] profile to cloud phones (queued in batches of 100, retried)",
            {202: _json("ActionsQueued", "Queued: one action per batch"), 409: "Conflict", **BODY_ERRORS,
             **ADMIN_ERRORS}, body="KooPhoneApplyRequest")},
    }


_API_SCHEMAS = (
    schemas.Error, schemas.HookAccepted, schemas.Health, schemas.Ready, schemas.EventPage, schemas.EventDetail,
    schemas.ReplayAccepted, schemas.FailedList, schemas.RequeueRequest, schemas.RequeueResult,
    schemas.LiveStartRequest, schemas.ActionQueued, schemas.LiveJob, schemas.LiveStartAgainRequest,
    schemas.LiveStartedAgain, schemas.Transcodes, schemas.KooPhoneApplyRequest, schemas.ActionsQueued,
    schemas.VendorStatus, schemas.VendorList, schemas.VendorResumed, schemas.VendorPauseRequest,
)


_FIGURE_SCHEMAS = (schemas.Overview, schemas.StreamList, schemas.VideoList, schemas.RejectedList, schemas.AuditList)


def _components(spec: APISpec) -> None:
    for schema in (*_API_SCHEMAS, *_FIGURE_SCHEMAS):
        spec.components.schema(schema.__name__, schema=schema)
    for source in SOURCES.values():
        for name, schema in source.API_DOC.schemas.items():
            if isinstance(schema, dict):  # already OpenAPI
                spec.components.schema(name, schema)
            else:
                spec.components.schema(name, schema=schema)
        for name, scheme in source.API_DOC.security_schemes.items():
            spec.components.security_scheme(name, scheme)
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    for name, response in ERRORS.items():
        spec.components.response(name, response)


def _refine(doc: dict[str, Any]) -> dict[str, Any]:
    """What the schemas cannot say by themselves."""
    components = doc["components"]["schemas"]
    requeue = components["RequeueRequest"]
    requeue.update(minProperties=1, maxProperties=1, description="Exactly one of `id`, `filter`, `all`.")
    components["RequeueFilter"]["minProperties"] = 1
    return doc


@lru_cache(maxsize=1)
def _document() -> str:
    spec = APISpec(title=TITLE, version=VERSION, openapi_version=OPENAPI_VERSION, plugins=[MarshmallowPlugin()],
                   info={"description": "Receives video vendors' callbacks (`/hooks/`), and the admin API "
                                        "(`/api/`, bearer token). Every error is JSON "
                                        "`{code, message, errors?}`; a wrong method is 405 with `Allow`."},
                   tags=[{"name": "hooks", "description": "Vendors' callbacks"},
                         {"name": "admin", "description": "The admin API: bearer token from `[admin] token`"},
                         {"name": "service", "description": "Health, metrics, this document"}])
    plugin = spec.plugins[0]
    assert isinstance(plugin, MarshmallowPlugin) and plugin.converter is not None
    plugin.converter.add_attribute_function(_vendor_fields)
    _components(spec)
    for path, operations in {**_hook_paths(), **_service_paths(), **_admin_paths()}.items():
        spec.path(path=path, operations=operations)
    return json.dumps(_refine(spec.to_dict()), separators=(",", ":"))


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may change it)."""
    return json.loads(_document())


def init_app(app: Flask) -> None:
    """Serve the document at /openapi.json, without authentication."""

    def openapi_json() -> Response:
        return Response(_document(), mimetype="application/json")

    app.add_url_rule("/openapi.json", "openapi_json", openapi_json, methods=["GET"])

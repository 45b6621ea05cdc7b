"""The shared receive path every callback takes: size, authenticate, decode, validate, record.

It knows no vendor: what differs per source (endpoints, auth, kept headers, how a re-delivery is
told apart) is what the source module declares (``app.sources.base.Source``).

Everything that can be done once (schemas, the Redis script, the job template) is done at
start-up; a request costs one Redis round trip (or one spool write when Redis is down).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Request, Response, abort, request
from marshmallow import ValidationError
from redis import RedisError

from app.core.body import Unsupported, decode_body
from app.core.config import Settings
from app.core.events import IGNORED, QUEUED, Event, dedup_digest, new_event_id, scope_digest
from app.core.fields import flatten_errors
from app.core.logs import CALLBACK_KEY
from app.sources.base import KEPT_HEADERS, Endpoint, Source
from app.web import spool

log = logging.getLogger(__name__)



def environ_keys(headers: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(header name, its WSGI environ key) for each header, so a request's are read directly."""
    return tuple((name, "CONTENT_TYPE" if name.lower() == "content-type"
                  else "HTTP_" + name.upper().replace("-", "_")) for name in headers)


def json_response(status: int, doc: dict[str, Any]) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")), status=status, mimetype="application/json")


def error_response(status: int, message: str, **extra: Any) -> Response:
    return json_response(status, {"code": status, "message": message, **extra})


def read_body(req: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 from its Content-Length before reading, and while reading
    (Flask's MAX_CONTENT_LENGTH is set to the same limit for chunked bodies)."""
    if req.content_length is not None and req.content_length > max_bytes:
        abort(413)
    body = req.get_data(cache=False)
    if len(body) > max_bytes:
        abort(413)
    return body


def _kept_headers(req: Request, kept: tuple[tuple[str, str], ...]) -> dict[str, str]:
    environ = req.environ
    return {name: value for name, key in kept if (value := environ.get(key)) is not None}


Ingest = Callable[[Event], tuple[bool, str]]


def make_view(source: Source, endpoint: Endpoint, settings: Settings, ingest: Ingest) -> Callable[[], Response]:
    """The Flask view for one source endpoint, with its collaborators bound once."""
    refusal = source.refusal
    describe = source.delivery  # how a re-delivery is told apart
    kept = environ_keys(KEPT_HEADERS + source.KEPT_HEADERS)
    parse = endpoint.parse
    max_bytes = settings.max_body_bytes

    def view() -> Response:
        body = read_body(request, max_bytes)
        if refusal(request, settings) is not None:  # which check failed is not said (the rejection list asks)
            return error_response(401, "unauthorized")
        try:
            payload = decode_body(body, endpoint.accept_base64, request.mimetype)
        except Unsupported as exc:  # 415, or 400 for a body sent as JSON that does not parse
            return error_response(exc.status, str(exc), **exc.extra())
        if not isinstance(payload, dict):
            return error_response(400, "invalid payload", errors={"_body": ["Must be a JSON object."]})
        try:
            parsed = parse(payload)
        except ValidationError as exc:
            return error_response(400, "invalid payload", errors=flatten_errors(exc.messages))
        received_at = time.time()
        how = describe(request, settings, parsed)
        event = Event(
            id=new_event_id(received_at),
            source=source.NAME,
            endpoint=endpoint.path,
            type=parsed.event_type,
            status=QUEUED if parsed.known else IGNORED,
            received_at=received_at,
            body=body,
            headers=_kept_headers(request, kept),
            refs=parsed.refs,
            remote_addr=request.remote_addr or "",
            dedup=dedup_digest(source.NAME, endpoint.path, body, how.salt) if how.dedup else "",
            sent_at=how.sent_at,
            dedup_scope=scope_digest(source.NAME, endpoint.path, how.scope) if how.scope else "",
        )
        return deliver(event, ingest, settings.spool_dir, request.environ)

    view.__name__ = f"hook_{source.NAME}_{endpoint.path.replace('-', '_')}"
    return view


def deliver(event: Event, ingest: Ingest, spool_dir: str, environ: dict | None = None) -> Response:
    """Record and queue the event, or spool it; answer 2xx only once it is safely kept.
    ``environ`` (the request's) gets the outcome noted under CALLBACK_KEY."""
    answer: dict[str, Any] = {"code": 0, "message": "OK"}
    outcome = "accepted"
    try:
        created, event_id = ingest(event)
    except RedisError as exc:
        try:
            spool.write(spool_dir, event)
        except OSError as spool_exc:
            log.error("event %s LOST for this delivery: Redis (%s) and spool (%s) both failed; answered 503",
                      event.id, exc.__class__.__name__, spool_exc, extra={"event_id": event.id})
            _note(environ, event.id, event, "unavailable")
            return error_response(503, "temporarily unable to store the event; retry later")
        log.warning("event %s spooled: Redis unavailable (%s)", event.id, exc.__class__.__name__,
                    extra={"event_id": event.id})
        created, event_id, outcome = True, event.id, "spooled"
    answer["event_id"] = event_id
    if not created:
        answer["duplicate"] = True
        outcome = "duplicate"
    elif event.status == IGNORED:
        answer["ignored"] = True
        outcome = "ignored" if outcome == "accepted" else outcome
    _note(environ, event_id, event, outcome)
    return json_response(200, answer)


def _note(environ: dict | None, event_id: str, event: Event, outcome: str) -> None:
    """What became of the callback, for app.web.metrics' counter and the access log."""
    if environ is not None:
        environ[CALLBACK_KEY] = (event_id, event.type if event.status == QUEUED else "other", outcome)

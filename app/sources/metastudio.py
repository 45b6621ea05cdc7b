"""Huawei Cloud MetaStudio live-event callbacks: the signature, the schemas, the endpoint.

Signature (``MSS_A`` / ``MSS_A_HEAD``, from the vendor SDK): ``hwTime`` is Unix seconds in
lowercase hex, ``hwSecret`` is lowercase hex HMAC-SHA256(key, URI + hwTime), where URI is the
callback URL without its scheme, with its query parameters (less hwSecret/hwTime) sorted by
name. ``NONE`` means the secret is a ``token`` query parameter of the URL.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from functools import lru_cache
from urllib.parse import urlsplit

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

from app.core.config import Settings
from app.core.fields import JSONString, Numeric, Text
from app.core.vendor_config import STREAM_STATES
from app.sources.base import (
    PLAIN_DELIVERY,
    TOKEN_PARAM,
    ApiDoc,
    Delivery,
    Endpoint,
    Parsed,
    Request,
    hook_path,
    secret_equals,
    token_refusal,
)

NAME = "metastudio"
LIVE_EVENTS_PATH = "live-events"
HOOK_PATH = hook_path(NAME, LIVE_EVENTS_PATH)  # what a live job's callback URL points at
# The signature: query parameters for MSS_A, headers for MSS_A_HEAD.
SECRET_PARAM, TIME_PARAM = "hwSecret", "hwTime"
SIGNATURE_PARAMS = (SECRET_PARAM, TIME_PARAM)
SECRET_HEADER, TIME_HEADER = "x-hw-mss-secret", "x-hw-mss-time"
# The signed send time is kept with the record (it orders live events); the secret never is.
KEPT_HEADERS = (TIME_HEADER,)
# STREAM_STATES is defined beside the config that validates against it (bindings' on_state), as
# app.core imports nothing above it; it is MetaStudio's list all the same.
# The states in which a stream is live, or about to be again: what the console lists first.
LIVE_STATES = ("CONNECTING", "CONNECTED", "RECONNECTING")
SCRIPT_SWITCH_EVENT = "SHOOT_SCRIPT_SWITCH"
STREAM_STATE_EVENT = "RTMP_STREAM_STATE_CHANGE"
REPLY_FINISH_EVENT = "REPLY_COMMAND_FINISH"
EVENT_TYPES = (SCRIPT_SWITCH_EVENT, STREAM_STATE_EVENT, REPLY_FINISH_EVENT)
# Bodies that carry no id and no time: the same bytes come back whenever a stream returns to a
# state (CONNECTED after DISCONNECTED) or a timeline to a paragraph, so bytes alone cannot tell
# a re-delivery from a transition. The message fields that name what the body is a state of:
ID_LESS_TYPES = {
    STREAM_STATE_EVENT: ("room_id", "job_id", "output_url"),
    SCRIPT_SWITCH_EVENT: ("room_id", "job_id"),
}
_EVENT_TYPE_SHAPE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # used with fullmatch: "$" would allow a trailing newline


# --- signature ------------------------------------------------------------------------------

def sign(key: str, uri: str, hw_time: str) -> str:
    """hwSecret for a URI (no scheme, query sorted) and hwTime (hex seconds)."""
    return hmac.new(key.encode("utf-8"), (uri + hw_time).encode("utf-8"), hashlib.sha256).hexdigest()


def canonical_uri(host: str, path: str, query_string: str) -> str:
    """host + path + '?' + query parameters sorted by name, the signature's own left out.

    Parameters are compared as they appear on the wire (still percent-encoded).
    """
    pairs = [p for p in query_string.split("&") if p and p.split("=", 1)[0] not in SIGNATURE_PARAMS]
    pairs.sort(key=lambda p: p.split("=", 1)[0])
    return host + path + ("?" + "&".join(pairs) if pairs else "")


def signed_url(url: str, key: str, now: float | None = None) -> str:
    """The callback URL with hwSecret and hwTime appended, as MetaStudio sends it (MSS_A)."""
    parts = urlsplit(url)
    hw_time = format(int(time.time() if now is None else now), "x")
    secret = sign(key, canonical_uri(parts.netloc, parts.path, parts.query), hw_time)
    sep = "&" if parts.query else "?"
    return f"{url}{sep}{SECRET_PARAM}={secret}&{TIME_PARAM}={hw_time}"


def signature_headers(url: str, key: str, now: float | None = None) -> dict[str, str]:
    """The x-hw-mss-* headers MetaStudio sends for MSS_A_HEAD."""
    parts = urlsplit(url)
    hw_time = format(int(time.time() if now is None else now), "x")
    return {
        SECRET_HEADER: sign(key, canonical_uri(parts.netloc, parts.path, parts.query), hw_time),
        TIME_HEADER: hw_time,
    }


@lru_cache(maxsize=8)
def _public_base(public_base_url: str) -> tuple[str, str]:
    parts = urlsplit(public_base_url)
    return parts.netloc, parts.path.rstrip("/")


def _fresh(hw_time: str, tolerance: int, now: float) -> bool:
    if not 1 <= len(hw_time) <= 16:
        return False
    try:
        sent = int(hw_time, 16)
    except ValueError:
        return False
    return abs(now - sent) <= tolerance


def refusal(req: Request, settings: Settings) -> str | None:
    """Why the request's credentials are refused (which check failed, never a secret), or None
    when they hold. The words are built only for a refused request."""
    src = settings.metastudio_source
    if src is None:
        return "no [sources.metastudio] configured"
    if src.auth_type == "NONE":
        return token_refusal(req, src.token)
    if src.auth_type == "MSS_A":
        given, hw_time = req.args.get(SECRET_PARAM), req.args.get(TIME_PARAM)
    else:
        given, hw_time = req.headers.get(SECRET_HEADER), req.headers.get(TIME_HEADER)
    if not given or not hw_time or not src.key:
        where = (f"query ({SECRET_PARAM}, {TIME_PARAM})" if src.auth_type == "MSS_A"
                 else f"headers ({SECRET_HEADER}, {TIME_HEADER})")
        return f"signature missing: auth_type {src.auth_type} expects it in the {where}"
    now = time.time()
    if not _fresh(hw_time, src.tolerance_seconds, now):
        return _stale(hw_time, src.tolerance_seconds, now)
    if settings.public_base_url:
        host, prefix = _public_base(settings.public_base_url)
    else:
        host, prefix = req.host, ""
    uri = canonical_uri(host, prefix + req.path, req.query_string.decode("latin-1"))
    if secret_equals(given.lower(), sign(src.key, uri, hw_time)):
        return None
    return (f"signature mismatch: wrong key, or the vendor signed another URL than {host}{prefix}{req.path} "
            "(check public_base_url, and the Host / X-Forwarded-Host the proxy passes)")


def _stale(hw_time: str, tolerance: int, now: float) -> str:
    try:
        skew = now - int(hw_time, 16) if 1 <= len(hw_time) <= 16 else None
    except ValueError:
        skew = None
    if skew is None:
        return "signed time is not hex Unix seconds"
    if skew > 0:
        return f"stale signed time: sent {skew:.0f}s ago, tolerance {tolerance}s (replay, or a slow clock)"
    return f"signed time in the future by {-skew:.0f}s, tolerance {tolerance}s (a fast clock)"


def signed_time(req: Request, settings: Settings) -> str | None:
    """The request's hwTime (hex seconds) where the auth type signs one, else None."""
    src = settings.metastudio_source
    if src is None or src.auth_type == "NONE":
        return None
    if src.auth_type == "MSS_A":
        return req.args.get(TIME_PARAM)
    return req.headers.get(TIME_HEADER)


def delivery(req: Request, settings: Settings, parsed: Parsed) -> Delivery:
    """How a re-delivery is told from a new event (docs/architecture.md, "Re-deliveries and
    transitions"). Called after ``refusal`` passed, so a signed time here is a checked one.

    A vendor retry repeats the signed request (same hwTime); a new transition is signed anew.
    So an id-less body is deduplicated on body + signed time, and only while it is still its
    stream's last event. Without a signed time (NONE) it is not deduplicated at all. A body that
    names itself (``reply_id``) or that we do not handle is deduplicated on its bytes, whatever
    its time, so a retry that MetaStudio signed anew is still caught.
    """
    hw_time = signed_time(req, settings)
    sent_at = float(int(hw_time, 16)) if hw_time else None
    scope_fields = ID_LESS_TYPES.get(parsed.event_type) if parsed.known else None
    if scope_fields is None:
        return Delivery(sent_at=sent_at) if sent_at is not None else PLAIN_DELIVERY
    if hw_time is None:
        return Delivery(dedup=False)
    scope = "\0".join([parsed.event_type, *(str(parsed.data.get(f, "")) for f in scope_fields)])
    return Delivery(sent_at=sent_at, salt=hw_time.lower(), scope=scope)


# --- schemas --------------------------------------------------------------------------------

class _Message(Schema):
    class Meta:
        unknown = INCLUDE

    room_id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    job_id = fields.String(required=True, validate=validate.Length(min=1, max=128))


class ShootScriptSwitchMessage(_Message):
    scene_script_name = Text(allow_none=True)
    shoot_script_sequence_no = Numeric(required=True)  # "2" in the docs; a number is accepted too
    shoot_script_title = Text(allow_none=True)


class RtmpStreamStateChangeMessage(_Message):
    output_url = fields.String(required=True)
    stream_key = fields.String(allow_none=True)  # a secret: masked wherever it is shown
    state = fields.String(required=True, validate=validate.OneOf(STREAM_STATES))


class ReplyCommandFinishMessage(_Message):
    reply_id = fields.String(required=True, validate=validate.Length(min=1))


def _envelope(event_type: str, message_schema: type[Schema]) -> Schema:
    # The type is chosen before this schema is (parse_live_event), so OneOf never refuses here:
    # it is what the OpenAPI document shows as the envelope's one event_type.
    schema = Schema.from_dict(
        {"event_type": fields.String(required=True, validate=validate.OneOf([event_type])),
         "message": JSONString(message_schema, required=True)},
        name=f"{message_schema.__name__}Event",
    )
    return schema(unknown=INCLUDE)


MESSAGE_SCHEMAS: dict[str, type[Schema]] = {
    SCRIPT_SWITCH_EVENT: ShootScriptSwitchMessage,
    STREAM_STATE_EVENT: RtmpStreamStateChangeMessage,
    REPLY_FINISH_EVENT: ReplyCommandFinishMessage,
}
EVENT_SCHEMAS: dict[str, Schema] = {event_type: _envelope(event_type, message)
                                    for event_type, message in MESSAGE_SCHEMAS.items()}


def parse_live_event(payload: dict) -> Parsed:
    """Validate a live event; an unknown but well-formed event type is accepted as not ours."""
    event_type = payload.get("event_type")
    if event_type is None:
        raise ValidationError({"event_type": ["Missing data for required field."]})
    if not isinstance(event_type, str) or not _EVENT_TYPE_SHAPE.fullmatch(event_type):
        raise ValidationError({"event_type": ["Must be an event type name (letters, digits, _ . : -; at most 64)."]})
    schema = EVENT_SCHEMAS.get(event_type)
    if schema is None:
        return Parsed(event_type, known=False)
    message = schema.load(payload)["message"]
    return Parsed(event_type, known=True, refs={"room_id": message["room_id"], "job_id": message["job_id"]},
                  data=message)


def _component(event_type: str) -> str:
    """The OpenAPI component name of an event type's envelope: ShootScriptSwitchEvent..."""
    return event_type.title().replace("_", "") + "Event"


ENDPOINTS = (Endpoint(
    LIVE_EVENTS_PATH, parse_live_event, accept_base64=False, summary="MetaStudio live event",
    body={"anyOf": [{"$ref": f"#/components/schemas/{_component(t)}"} for t in EVENT_TYPES]},
    description=f"{', '.join(EVENT_TYPES)}; `message` is a JSON object sent as a string. Another well-formed "
                "`event_type` is stored as ignored (200).",
),)

API_DOC = ApiDoc(
    security_schemes={
        "metastudioToken": {"type": "apiKey", "in": "query", "name": TOKEN_PARAM,
                            "description": "auth_type NONE: `[sources.metastudio] token`, in the callback URL."},
        "metastudioSecret": {"type": "apiKey", "in": "query", "name": SECRET_PARAM,
                             "description": "auth_type MSS_A: lowercase hex HMAC-SHA256(key, URI + hwTime), URI = "
                                            "host + path + query without hwSecret/hwTime, sorted by name."},
        "metastudioTime": {"type": "apiKey", "in": "query", "name": TIME_PARAM,
                           "description": "auth_type MSS_A: Unix seconds, lowercase hex; within tolerance_seconds."},
        "metastudioHeadSecret": {"type": "apiKey", "in": "header", "name": SECRET_HEADER,
                                 "description": "auth_type MSS_A_HEAD: as hwSecret, in a header."},
        "metastudioHeadTime": {"type": "apiKey", "in": "header", "name": TIME_HEADER,
                               "description": "auth_type MSS_A_HEAD: as hwTime, in a header."},
    },
    security=({"metastudioSecret": [], "metastudioTime": []}, {"metastudioHeadSecret": [], "metastudioHeadTime": []},
              {"metastudioToken": []}),
    schemas={**{message.__name__: message for message in MESSAGE_SCHEMAS.values()},
             **{_component(event_type): schema for event_type, schema in EVENT_SCHEMAS.items()}},
)

"""Configuration of the vendors we call (the worker side): ``[transcoder]``, ``[flighthub]``,
``[koophone]``, ``[metastudio]``. Part of the one Settings object (see app/core/config.py).

Each section is optional: without it, that vendor's actions are off. Each has the same
HTTP and retry keys, with defaults: connect/read timeouts and the retry schedule.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError, fields, post_load, validate, validates_schema

from app.core.fields import Strict

STREAM_STATES = ("CONNECTING", "CONNECTED", "DISCONNECTED", "RECONNECTING", "END")
# Muducloud's task_config_temp_id per rung of the ladder.
RUNG_TEMPLATE_IDS: dict[str, int] = {"360": 1, "480": 2, "720": 3, "1080": 4, "original": 5}
DEFINITIONS = ("definition_540P", "definition_720P", "definition_1080P")
# Fields of a CDNetworks video record that origin_url_template may use.
VIDEO_FIELDS = frozenset({
    "videoId", "videoName", "publishDomain", "createUser", "flashPlayerId", "uploadTime", "createTime",
    "updateTime", "videoClassification",
})


@dataclass(frozen=True)
class HttpPolicy:
    """Timeouts and the retry schedule for one vendor's calls."""

    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    retry_attempts: int = 10
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 600.0
    # Calls per second to this vendor, shared by every worker on every host (0: no limit);
    # see workers/vendor_control.py.
    rate_limit_per_second: float = 0.0


@dataclass(frozen=True)
class Transcoder:
    base_url: str
    auth_header: tuple[str, str] | None = field(repr=False)
    origin_url_template: str
    ladder: tuple[str, ...]
    format: str
    poll_initial_seconds: float
    poll_max_seconds: float
    poll_deadline_seconds: float
    resubmit_count: int
    http: HttpPolicy


@dataclass(frozen=True)
class ConverterBinding:
    """Which converter follows which MetaStudio room (or output URL)."""

    room_id: str | None
    output_url: str | None
    converter_id: str | None
    create: dict[str, str] | None


@dataclass(frozen=True)
class FlightHub:
    base_url: str
    user_token: str = field(repr=False)
    project_uuid: str | None
    language: str
    bindings: tuple[ConverterBinding, ...]
    http: HttpPolicy


@dataclass(frozen=True)
class KooPhoneBinding:
    room_id: str
    instance_ids: tuple[str, ...]
    on_state: dict[str, str]


@dataclass(frozen=True)
class KooPhone:
    base_url: str
    auth_token: str = field(repr=False)
    profiles: dict[str, dict[str, dict[str, int]]]
    bindings: tuple[KooPhoneBinding, ...]
    http: HttpPolicy


@dataclass(frozen=True)
class MetaStudioApi:
    base_url: str
    project_id: str
    auth_token: str = field(repr=False)
    http: HttpPolicy


_BASE_URL = validate.Regexp(r"^https?://[^/?#]+(/[^?#]*)?$", error="Must be an http(s) base URL.")


class _VendorSchema(Strict):
    base_url = fields.String(required=True, validate=_BASE_URL)
    connect_timeout = fields.Float(load_default=3.0, validate=validate.Range(min=0.1, max=60))
    read_timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=300))
    retry_attempts = fields.Integer(load_default=10, validate=validate.Range(min=0, max=50))
    retry_base_seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0.01, max=3600))
    retry_max_seconds = fields.Float(load_default=600.0, validate=validate.Range(min=0.01, max=86400))
    rate_limit_per_second = fields.Float(load_default=0.0, validate=validate.Range(min=0, max=10000))

    def _http(self, data: dict) -> HttpPolicy:
        return HttpPolicy(**{k: data.pop(k) for k in ("connect_timeout", "read_timeout", "retry_attempts",
                                                      "retry_base_seconds", "retry_max_seconds",
                                                      "rate_limit_per_second")})


def _auth_header(value: str) -> None:
    if value and (":" not in value or not value.split(":", 1)[0].strip()):
        raise ValidationError('Must look like "Header-Name: value".')


def _template(value: str) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValidationError(f"Not a valid template: {exc}.") from None
    unknown = sorted(names - VIDEO_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown field(s) {unknown}; use fields of the video record: {sorted(VIDEO_FIELDS)}.")


def _rung(value: Any) -> None:
    if str(value) not in RUNG_TEMPLATE_IDS:
        raise ValidationError('Each rung must be one of 360, 480, 720, 1080 or "original".')


class TranscoderSchema(_VendorSchema):
    auth_header = fields.String(load_default="", validate=_auth_header)
    origin_url_template = fields.String(load_default="https://{publishDomain}/{videoId}.mp4", validate=_template)
    ladder = fields.List(fields.Raw(validate=_rung), load_default=lambda: [360, 480, 720, 1080],
                         validate=validate.Length(min=1, max=5))
    format = fields.String(load_default="m3u8", validate=validate.Length(min=1, max=16))
    poll_initial_seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0.01, max=3600))
    poll_max_seconds = fields.Float(load_default=120.0, validate=validate.Range(min=0.01, max=86400))
    poll_deadline_seconds = fields.Float(load_default=6 * 3600.0, validate=validate.Range(min=1, max=7 * 86400))
    resubmit_count = fields.Integer(load_default=1, validate=validate.Range(min=0, max=10))

    @post_load
    def _make(self, data: dict, **_: Any) -> Transcoder:
        http = self._http(data)
        header = data.pop("auth_header")
        name, _, value = header.partition(":")
        ladder = tuple(dict.fromkeys(str(r) for r in data.pop("ladder")))
        return Transcoder(auth_header=(name.strip(), value.strip()) if header else None, ladder=ladder, http=http,
                          **data)


class _CreateConverterSchema(Strict):
    converter_name = fields.String(required=True, validate=validate.Length(min=1, max=64))
    sn = fields.String(required=True, validate=validate.Length(min=1))
    camera_index = fields.String(required=True, validate=validate.Length(min=1))
    url = fields.String(required=True, validate=validate.Regexp(r"^rtmps?://", error="Must be an rtmp:// URL."))


class _ConverterBindingSchema(Strict):
    room_id = fields.String(load_default=None, validate=validate.Length(min=1))
    output_url = fields.String(load_default=None, validate=validate.Length(min=1))
    converter_id = fields.String(load_default=None, validate=validate.Length(min=1))
    create = fields.Nested(_CreateConverterSchema, load_default=None)

    @validates_schema
    def _one_of_each(self, data: dict, **_: Any) -> None:
        if bool(data["room_id"]) == bool(data["output_url"]):
            raise ValidationError("give exactly one of room_id and output_url", "room_id")
        if bool(data["converter_id"]) == bool(data["create"]):
            raise ValidationError("give exactly one of converter_id and create", "converter_id")

    @post_load
    def _make(self, data: dict, **_: Any) -> ConverterBinding:
        return ConverterBinding(**data)


class FlightHubSchema(_VendorSchema):
    user_token = fields.String(required=True, validate=validate.Length(min=1),
                               error_messages={"required": "required (or set MEDIAHOOK_FLIGHTHUB_USER_TOKEN)"})
    project_uuid = fields.String(load_default=None)
    language = fields.String(load_default="en", validate=validate.OneOf(("zh", "en")))
    bindings = fields.List(fields.Nested(_ConverterBindingSchema), load_default=list)

    @post_load
    def _make(self, data: dict, **_: Any) -> FlightHub:
        http = self._http(data)
        return FlightHub(bindings=tuple(data.pop("bindings")), http=http, **data)


def _hundreds(value: int) -> None:
    if value % 100:
        raise ValidationError("Must be a multiple of 100 (kbit/s).")


class _SpecSchema(Strict):
    """One definition's video spec, in the vendor's ranges."""

    code_rate = fields.Integer(required=True, strict=True, validate=[validate.Range(min=100, max=10000), _hundreds])
    fps = fields.Integer(required=True, strict=True, validate=validate.OneOf((30, 60)))


class _ProfileSchema(Strict):
    definition_540P = fields.Nested(_SpecSchema, required=True)
    definition_720P = fields.Nested(_SpecSchema, required=True)
    definition_1080P = fields.Nested(_SpecSchema, required=True)


class _KooPhoneBindingSchema(Strict):
    room_id = fields.String(required=True, validate=validate.Length(min=1))
    instance_ids = fields.List(fields.String(validate=validate.Length(min=1, max=32)), required=True,
                               validate=validate.Length(min=1))
    on_state = fields.Dict(keys=fields.String(validate=validate.OneOf(STREAM_STATES)), values=fields.String(),
                           required=True)

    @post_load
    def _make(self, data: dict, **_: Any) -> KooPhoneBinding:
        return KooPhoneBinding(room_id=data["room_id"], instance_ids=tuple(data["instance_ids"]),
                               on_state=dict(data["on_state"]))


class KooPhoneSchema(_VendorSchema):
    auth_token = fields.String(required=True, validate=validate.Length(min=1),
                               error_messages={"required": "required (or set MEDIAHOOK_KOOPHONE_AUTH_TOKEN)"})
    profiles = fields.Dict(keys=fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_.-]{1,64}$")),
                           values=fields.Nested(_ProfileSchema), load_default=dict)
    bindings = fields.List(fields.Nested(_KooPhoneBindingSchema), load_default=list)

    @validates_schema
    def _profiles_exist(self, data: dict, **_: Any) -> None:
        for i, binding in enumerate(data.get("bindings") or []):
            for state, profile in binding.on_state.items():
                if profile not in (data.get("profiles") or {}):
                    raise ValidationError({str(i): {"on_state": {state: [f"no profile named {profile!r}"]}}},
                                          "bindings")

    @post_load
    def _make(self, data: dict, **_: Any) -> KooPhone:
        http = self._http(data)
        return KooPhone(bindings=tuple(data.pop("bindings")), http=http, **data)


class MetaStudioApiSchema(_VendorSchema):
    project_id = fields.String(required=True, validate=validate.Length(min=1))
    auth_token = fields.String(required=True, validate=validate.Length(min=1),
                               error_messages={"required": "required (or set MEDIAHOOK_METASTUDIO_AUTH_TOKEN)"})

    @post_load
    def _make(self, data: dict, **_: Any) -> MetaStudioApi:
        http = self._http(data)
        return MetaStudioApi(http=http, **data)


# Secrets of these sections that the environment may supply (only where the section exists).
VENDOR_SECRET_ENV = {
    ("transcoder", "auth_header"): "MEDIAHOOK_TRANSCODER_AUTH_HEADER",
    ("flighthub", "user_token"): "MEDIAHOOK_FLIGHTHUB_USER_TOKEN",
    ("koophone", "auth_token"): "MEDIAHOOK_KOOPHONE_AUTH_TOKEN",
    ("metastudio", "auth_token"): "MEDIAHOOK_METASTUDIO_AUTH_TOKEN",
}

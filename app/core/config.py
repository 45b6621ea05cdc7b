"""The one validated configuration object, built once at start-up.

Read from the TOML file named by ``MEDIAHOOK_CONFIG`` (optional: without it every key takes
its default), then overridden by the environment: ``REDIS_URL`` and the secrets listed in
``SECRET_ENV``. A bad value stops start-up with a ``ConfigError`` naming the key.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from marshmallow import ValidationError, fields, validate, validates, validates_schema

from app.core.fields import Strict, flatten_errors
from app.core.vendor_config import (
    VENDOR_SECRET_ENV,
    FlightHub,
    FlightHubSchema,
    KooPhone,
    KooPhoneSchema,
    MetaStudioApi,
    MetaStudioApiSchema,
    Transcoder,
    TranscoderSchema,
)

AUTH_TYPES = ("NONE", "MSS_A", "MSS_A_HEAD")

# Every secret can come from the environment instead of the file (the environment wins).
SECRET_ENV = {
    ("sources", "metastudio", "key"): "MEDIAHOOK_METASTUDIO_KEY",
    ("sources", "metastudio", "token"): "MEDIAHOOK_METASTUDIO_TOKEN",
    ("sources", "cdnetworks", "token"): "MEDIAHOOK_CDNETWORKS_TOKEN",
    ("admin", "token"): "MEDIAHOOK_ADMIN_TOKEN",
}


class ConfigError(Exception):
    """A configuration problem; the message names the key."""


@dataclass(frozen=True)
class MetaStudioSource:
    auth_type: str
    key: str | None = field(repr=False)
    token: str | None = field(repr=False)
    tolerance_seconds: int = 60


@dataclass(frozen=True)
class CDNetworksSource:
    token: str | None = field(repr=False)


@dataclass(frozen=True)
class Settings:
    public_base_url: str | None
    max_body_bytes: int
    dedup_window_seconds: int
    retention_seconds: int
    spool_dir: str
    redis_url: str
    redis_socket_timeout: float
    redis_connect_timeout: float
    redis_ingest_timeout: float
    job_timeout_seconds: int
    # The sources that call us (`[sources.<name>]`, attribute `<name>_source`); None: that
    # source's callbacks are refused (401).
    metastudio_source: MetaStudioSource | None
    cdnetworks_source: CDNetworksSource | None
    # The vendors we call (top-level sections); None means that vendor's actions are off.
    # MetaStudio is both: it calls us (`[sources.metastudio]`) and we call its API to start live
    # jobs (`[metastudio]`, kept as the file's key so deployed configs still load).
    transcoder: Transcoder | None = None
    flighthub: FlightHub | None = None
    koophone: KooPhone | None = None
    metastudio_api: MetaStudioApi | None = None
    admin_token: str | None = field(default=None, repr=False)
    # Named admin tokens, (name, token) pairs: the audit log says who did what. `[admin] token`
    # is among them as "admin". A tuple, not a dict: Settings stays hashable.
    admin_tokens: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    trusted_proxies: tuple[str, ...] = ()
    log_format: str = "json"
    log_level: str = "INFO"
    source_file: str | None = None

    def source(self, name: str) -> MetaStudioSource | CDNetworksSource | None:
        """The section of the callback source ``name`` (``[sources.<name>]``), None if absent."""
        return getattr(self, f"{name}_source")


def _url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError("Must be an http(s) URL with a host, e.g. https://hooks.example.com.")
    if parts.query or parts.fragment:
        raise ValidationError("Must not have a query string or fragment.")


class MetaStudioSchema(Strict):
    auth_type = fields.String(load_default="MSS_A", validate=validate.OneOf(AUTH_TYPES))
    # The vendor limits the key to 32 characters.
    key = fields.String(load_default=None, validate=validate.Length(min=1, max=32))
    token = fields.String(load_default=None, validate=validate.Length(min=8))
    tolerance_seconds = fields.Integer(load_default=60, validate=validate.Range(min=1, max=3600))

    @validates_schema
    def _secret_for_auth_type(self, data: dict, **_: Any) -> None:
        if data["auth_type"] == "NONE" and not data["token"]:
            raise ValidationError(
                "required when auth_type is NONE (or set MEDIAHOOK_METASTUDIO_TOKEN)", "token"
            )
        if data["auth_type"] in ("MSS_A", "MSS_A_HEAD") and not data["key"]:
            raise ValidationError(
                f"required when auth_type is {data['auth_type']} (or set MEDIAHOOK_METASTUDIO_KEY)", "key"
            )


class CDNetworksSchema(Strict):
    token = fields.String(required=True, validate=validate.Length(min=8),
                          error_messages={"required": "required (or set MEDIAHOOK_CDNETWORKS_TOKEN)"})


class SourcesSchema(Strict):
    metastudio = fields.Nested(MetaStudioSchema, load_default=None)
    cdnetworks = fields.Nested(CDNetworksSchema, load_default=None)


class RedisSchema(Strict):
    url = fields.String(load_default="redis://127.0.0.1:6379/0", validate=validate.Regexp(
        r"^(redis|rediss|unix|redis\+sentinel)://",
        error="Must be a redis://, rediss://, unix:// or redis+sentinel:// URL."))
    socket_timeout = fields.Float(load_default=2.0, validate=validate.Range(min=0.05, max=60))
    connect_timeout = fields.Float(load_default=1.0, validate=validate.Range(min=0.05, max=60))
    # How long a callback's write (and /readyz's PING) waits before Redis counts as hung and the
    # breaker opens. The ingest script answers in well under a millisecond; a healthy Redis
    # past 100 ms is blocked (a slow command, a fork on a big dataset). A wrong trip costs only a
    # detour through the spool; a long one delays every callback queued behind it.
    ingest_timeout = fields.Float(load_default=0.1, validate=validate.Range(min=0.01, max=60))

    @validates("url")
    def _sentinel_form(self, value: str, **_: Any) -> None:
        if value.startswith("redis+sentinel://"):
            from app.core.redis import parse_sentinel_url  # app.core.redis imports this module

            try:
                parse_sentinel_url(value)
            except ConfigError as exc:
                raise ValidationError(str(exc).removeprefix("redis.url: ")) from None


ADMIN_TOKEN_NAME = "admin"  # the name `[admin] token` goes by in the audit log


class AdminSchema(Strict):
    # Bearer token for /api/ (and the console's sign-in); without one, /api/ answers 401 (fail closed).
    token = fields.String(load_default=None, validate=validate.Length(min=16))
    # More tokens, one per person or system: name -> token. Any of them opens /api/ and the console.
    tokens = fields.Dict(keys=fields.String(validate=validate.Regexp(
        r"^[A-Za-z0-9_.@-]{1,64}$", error="Token names are 1-64 letters, digits, _ . @ -.")),
        values=fields.String(validate=validate.Length(min=16)), load_default=dict)

    @validates_schema
    def _distinct(self, data: dict, **_: Any) -> None:
        named = dict(data["tokens"])
        if data["token"] and ADMIN_TOKEN_NAME in named:
            raise ValidationError(f"{ADMIN_TOKEN_NAME!r} is the name of [admin] token: use another", "tokens")
        values = [*named.values(), *([data["token"]] if data["token"] else [])]
        if len(set(values)) != len(values):
            raise ValidationError("two names share one token: the audit log could not tell them apart", "tokens")


def _network(value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValidationError(f"Not an IP address or network: {value!r}.") from None


class WebSchema(Strict):
    # Proxies (IPs or CIDRs) whose X-Forwarded-For/-Proto/-Host are believed; nobody else's.
    trusted_proxies = fields.List(fields.String(validate=_network), load_default=list)


class LoggingSchema(Strict):
    format = fields.String(load_default="json", validate=validate.OneOf(("json", "text")))
    level = fields.String(load_default="INFO", validate=validate.OneOf(("DEBUG", "INFO", "WARNING", "ERROR")))


class SettingsSchema(Strict):
    public_base_url = fields.String(load_default=None, validate=_url)
    max_body_bytes = fields.Integer(load_default=1024 * 1024, validate=validate.Range(min=1024, max=64 * 1024 * 1024))
    dedup_window_seconds = fields.Integer(load_default=600, validate=validate.Range(min=1, max=7 * 86400))
    retention_days = fields.Float(load_default=7.0, validate=validate.Range(min=0.01, max=365))
    spool_dir = fields.String(load_default="var/spool", validate=validate.Length(min=1))
    job_timeout_seconds = fields.Integer(load_default=300, validate=validate.Range(min=1, max=86400))
    redis = fields.Nested(RedisSchema, load_default=lambda: RedisSchema().load({}))
    sources = fields.Nested(SourcesSchema, load_default=lambda: SourcesSchema().load({}))
    transcoder = fields.Nested(TranscoderSchema, load_default=None)
    flighthub = fields.Nested(FlightHubSchema, load_default=None)
    koophone = fields.Nested(KooPhoneSchema, load_default=None)
    # MetaStudio's API we call (Settings.metastudio_api); its callbacks are [sources.metastudio].
    metastudio = fields.Nested(MetaStudioApiSchema, load_default=None)
    admin = fields.Nested(AdminSchema, load_default=lambda: AdminSchema().load({}))
    web = fields.Nested(WebSchema, load_default=lambda: WebSchema().load({}))
    logging = fields.Nested(LoggingSchema, load_default=lambda: LoggingSchema().load({}))


def _apply_env(raw: dict, env: Mapping[str, str]) -> dict:
    for path, var in SECRET_ENV.items():
        if env.get(var):
            node = raw
            for part in path[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"{'.'.join(path[:-1])}: must be a table")
            node[path[-1]] = env[var]
    for (section, key), var in VENDOR_SECRET_ENV.items():
        # Only for a section the file has: a secret alone does not switch a vendor on.
        if env.get(var) and isinstance(raw.get(section), dict):
            raw[section][key] = env[var]
    if env.get("MEDIAHOOK_PUBLIC_BASE_URL"):
        raw["public_base_url"] = env["MEDIAHOOK_PUBLIC_BASE_URL"]
    if env.get("MEDIAHOOK_SPOOL_DIR"):
        raw["spool_dir"] = env["MEDIAHOOK_SPOOL_DIR"]
    if env.get("REDIS_URL"):
        raw.setdefault("redis", {})
        if not isinstance(raw["redis"], dict):
            raise ConfigError("redis: must be a table")
        raw["redis"]["url"] = env["REDIS_URL"]
    return raw


def _admin_tokens(admin: dict) -> tuple[tuple[str, str], ...]:
    named = sorted(admin["tokens"].items())
    return ((ADMIN_TOKEN_NAME, admin["token"]), *named) if admin["token"] else tuple(named)


def build(raw: dict, env: Mapping[str, str] | None = None, source_file: str | None = None) -> Settings:
    """Validate a config mapping (as parsed from TOML) plus the environment into Settings."""
    raw = _apply_env(copy.deepcopy(raw), os.environ if env is None else env)
    try:
        data = SettingsSchema().load(raw)
    except ValidationError as exc:
        where = f" in {source_file}" if source_file else ""
        lines = [f"{key}: {'; '.join(errs)}" for key, errs in flatten_errors(exc.messages).items()]
        raise ConfigError(f"bad configuration{where}:\n  " + "\n  ".join(lines)) from None
    sources = data["sources"]
    ms, cdn = sources.get("metastudio"), sources.get("cdnetworks")
    return Settings(
        public_base_url=data["public_base_url"].rstrip("/") if data["public_base_url"] else None,
        max_body_bytes=data["max_body_bytes"],
        dedup_window_seconds=data["dedup_window_seconds"],
        retention_seconds=int(data["retention_days"] * 86400),
        spool_dir=data["spool_dir"],
        redis_url=data["redis"]["url"],
        redis_socket_timeout=data["redis"]["socket_timeout"],
        redis_connect_timeout=data["redis"]["connect_timeout"],
        redis_ingest_timeout=data["redis"]["ingest_timeout"],
        job_timeout_seconds=data["job_timeout_seconds"],
        metastudio_source=MetaStudioSource(**ms) if ms else None,
        cdnetworks_source=CDNetworksSource(**cdn) if cdn else None,
        transcoder=data["transcoder"],
        flighthub=data["flighthub"],
        koophone=data["koophone"],
        metastudio_api=data["metastudio"],
        admin_token=data["admin"]["token"],
        admin_tokens=_admin_tokens(data["admin"]),
        trusted_proxies=tuple(data["web"]["trusted_proxies"]),
        log_format=data["logging"]["format"],
        log_level=data["logging"]["level"],
        source_file=source_file,
    )


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from ``MEDIAHOOK_CONFIG`` (if set) and the environment."""
    env = os.environ if env is None else env
    path = env.get("MEDIAHOOK_CONFIG")
    raw: dict = {}
    if path:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"MEDIAHOOK_CONFIG: no such file: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"MEDIAHOOK_CONFIG: {path} is not valid TOML: {exc}") from None
    return build(raw, env, source_file=path)

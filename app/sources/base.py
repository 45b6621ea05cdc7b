"""What every source module shares: the contract a source declares (``Source``), the endpoint and
parse-result types, where hooks are served, and secret comparison."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

# Every source endpoint is served at HOOKS_PREFIX/<source>/<endpoint> (see ``hook_path``).
HOOKS_PREFIX = "/hooks"
# Request headers kept with every event record, whatever its source; a source adds its own in its
# KEPT_HEADERS. Never a header that carries a secret.
KEPT_HEADERS = ("Content-Type", "User-Agent", "X-Request-Id", "X-Forwarded-For", "X-Real-Ip")
# The query parameter that carries a callback URL's secret, where a source's auth is a token.
TOKEN_PARAM = "token"


def hook_path(source: str, endpoint: str) -> str:
    """The URL path a source endpoint is served at (and that a vendor is told to call)."""
    return f"{HOOKS_PREFIX}/{source}/{endpoint}"


class Request(Protocol):
    """What a source reads of an HTTP request (a Flask/Werkzeug request has it), so that source
    modules, which the workers import, do not load Flask."""

    args: Mapping[str, str]
    headers: Mapping[str, str]
    host: str
    path: str
    query_string: bytes


@dataclass(frozen=True)
class Parsed:
    """What a source made of a payload: its event type, whether we handle that type, and the
    ids worth indexing (room, job, video) so the event can be found later."""

    event_type: str
    known: bool
    refs: dict[str, Any] = field(default_factory=dict)
    # The validated payload (for MetaStudio: the decoded ``message``), for the worker side.
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    """One callback URL of a source, served at ``/hooks/<source>/<path>``.

    ``parse`` raises ``marshmallow.ValidationError`` for a payload that breaks the schema.
    ``summary``, ``body`` (a component name of the source's ``ApiDoc.schemas``, or an OpenAPI
    schema) and ``description`` are its entry in the OpenAPI document.
    """

    path: str
    parse: Callable[[dict], Parsed]
    accept_base64: bool = False
    summary: str = ""
    body: str | dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class ApiDoc:
    """How a source's hooks appear in the OpenAPI document (app/admin/openapi.py builds their
    paths from this and ``ENDPOINTS``): its security schemes, the alternatives every endpoint
    accepts, and its component schemas (Marshmallow schemas, or OpenAPI dicts)."""

    security_schemes: dict[str, dict[str, Any]]
    security: tuple[dict[str, list], ...]
    schemas: dict[str, Any]


@dataclass(frozen=True)
class Delivery:
    """How to tell a vendor's re-delivery of a request from a new event, per request.

    ``sent_at``: the vendor's signed send time (Unix seconds), when the request carries one.
    ``salt``: added to the body in the delivery-dedup digest (e.g. that signed time, for a body
    that does not identify itself). ``dedup`` False: every delivery is recorded as its own
    event (the worker side's state-level comparison makes a repeat a no-op). ``scope``: what the
    body is a state of (e.g. one stream); a repeat is a re-delivery only while it is still the
    last event recorded for its scope, so a state that follows a different one is always new.
    """

    sent_at: float | None = None
    salt: str = ""
    dedup: bool = True
    scope: str = ""


PLAIN_DELIVERY = Delivery()


def plain_delivery(req: Any, settings: Any, parsed: Parsed) -> Delivery:
    """For a source whose bodies identify themselves: the same body is the same delivery."""
    return PLAIN_DELIVERY


class Source(Protocol):
    """What a source module declares, and all that the web receive path (app/web/receive.py) and
    the worker side read of it. Its settings are ``settings.source(NAME)`` (``[sources.<NAME>]``):
    None there means every callback is refused.

    ``refusal(req, settings)``: why the request's credentials are refused (which check failed,
    never a secret), or None when they hold; it must fail closed. ``delivery(req, settings,
    parsed)``: how a re-delivery is told from a new event (``Delivery``; ``plain_delivery`` for
    bodies that identify themselves). Called only for an authenticated, valid request.
    """

    NAME: str
    ENDPOINTS: tuple[Endpoint, ...]
    KEPT_HEADERS: tuple[str, ...]  # added to base.KEPT_HEADERS on the event record
    API_DOC: ApiDoc

    def refusal(self, req: Request, settings: Any) -> str | None: ...

    def delivery(self, req: Request, settings: Any, parsed: Parsed) -> Delivery: ...


def token_refusal(req: Request, expected: str | None) -> str | None:
    """Why the callback URL's ``token`` parameter is refused (never the token), or None."""
    given = req.args.get(TOKEN_PARAM)
    if secret_equals(given, expected):
        return None
    return "token missing from the URL" if not given else "wrong token"


def secret_equals(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison that fails closed when either side is missing."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))

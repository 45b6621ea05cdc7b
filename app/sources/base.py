"""What every source module shares: the endpoint and parse-result types, and secret comparison."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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
    """

    path: str
    parse: Callable[[dict], Parsed]
    accept_base64: bool = False


def secret_equals(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison that fails closed when either side is missing."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))

"""Masking secrets (tokens, keys, signatures, ``stream_key``) wherever an event is shown."""

from __future__ import annotations

import json
from typing import Any

MASK = "***"
SECRET_NAMES = frozenset({
    "stream_key", "stream_keys", "key", "token", "hwsecret", "x-hw-mss-secret", "auth_token",
    "user_token", "x-auth-token", "x-user-token", "password", "secret", "authorization",
})


def redact(value: Any) -> Any:
    """A copy of a decoded JSON value with secret-named fields masked, also inside JSON-in-a-string."""
    if isinstance(value, dict):
        return {k: (MASK if k.lower() in SECRET_NAMES and v not in (None, "") else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and value[:1] == "{":
        try:
            inner = json.loads(value)
        except ValueError:
            return value
        return json.dumps(redact(inner), ensure_ascii=False, separators=(",", ":"))
    return value


def redact_body(body: bytes) -> Any:
    """A stored raw body made fit to show: decoded JSON with secrets masked."""
    from app.sources.body import Unsupported, decode_body

    try:
        return redact(decode_body(body, accept_base64=True))
    except Unsupported:
        return f"<{len(body)} bytes, not JSON>"

"""THE secret rule, and masking secrets (tokens, keys, signatures, ``stream_key``) wherever an
event is shown; the log formatter (app/core/logs.py) masks by the same rule."""

from __future__ import annotations

import json
import re
from typing import Any

from app.core.body import Unsupported, decode_body

MASK = "***"

# A name is secret if it ends in token/secret/password/signature/authorization/credentials or
# is a "*_key" / "key" (stream_key, api_key, hwSecret, x-hw-mss-secret, auth_token, ...).
_SECRET_NAME = re.compile(
    r"(?i)(?:token|secret|passw(?:or)?d|signature|authorization|credentials?|cookie)s?$|(?:^|[_.-])keys?$")


def secret_name(name: str) -> bool:
    """Whether a field, header or parameter of this name holds a secret."""
    return bool(_SECRET_NAME.search(name))


def redact(value: Any) -> Any:
    """A copy of a decoded JSON value with secret-named fields masked, also inside JSON-in-a-string."""
    if isinstance(value, dict):
        return {k: (MASK if secret_name(k) and v not in (None, "") else redact(v)) for k, v in value.items()}
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
    try:
        return redact(decode_body(body, accept_base64=True))
    except Unsupported:
        return f"<{len(body)} bytes, not JSON>"

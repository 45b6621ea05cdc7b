"""How a callback body is decoded: JSON, or URL-safe Base64 of JSON where an endpoint allows it.

Both sides use it: the web side to refuse what does not decode (415, or 400 for a body sent as
JSON that does not parse), the workers to re-read a stored body exactly as it was validated.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

_STD_ALPHABET = bytes.maketrans(b"-_", b"+/")


class Unsupported(Exception):
    """The body is neither JSON nor (where allowed) URL-safe Base64 of JSON: 415."""

    status = 415

    def extra(self) -> dict[str, Any]:
        return {}


class MalformedJson(Unsupported):
    """The body says it is JSON (its Content-Type) but does not parse: 400, saying where."""

    status = 400

    def __init__(self, exc: ValueError | RecursionError) -> None:
        self.where: dict[str, int] = {}
        if isinstance(exc, json.JSONDecodeError):
            self.where = {"line": exc.lineno, "column": exc.colno, "position": exc.pos}
            why = f"{exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})"
        elif isinstance(exc, UnicodeDecodeError):
            self.where = {"position": exc.start}
            why = f"not UTF-8 at byte {exc.start}"
        else:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        super().__init__(f"body is not valid JSON: {why}")

    def extra(self) -> dict[str, Any]:
        return {"errors": {"_body": [str(self)]}, **self.where}


def is_json_type(mimetype: str | None) -> bool:
    """``application/json`` or any ``…+json`` (what a sender means by "this is JSON")."""
    mimetype = (mimetype or "").lower()
    return mimetype == "application/json" or mimetype.endswith("+json")


def _where_it_broke(body: bytes, exc: ValueError | RecursionError) -> MalformedJson:
    """The error of the body as sent (not stripped), so that line, column and position are the
    sender's."""
    try:
        json.loads(body)
    except (ValueError, RecursionError) as original:
        return MalformedJson(original)
    return MalformedJson(exc)


def decode_body(body: bytes, accept_base64: bool, mimetype: str | None = None) -> Any:
    """JSON first; then, where the endpoint allows it, URL-safe (or standard) Base64 of JSON.
    Base64 of a JSON object starts with "e", so it can never be mistaken for JSON.

    A body whose Content-Type (``mimetype``) says JSON and that is not JSON (nor, where allowed,
    Base64 of JSON) is a broken JSON body (``MalformedJson``, 400); any other undecodable body is
    in a format the endpoint does not take (``Unsupported``, 415). Vendors send JSON as
    ``text/plain`` too, so the Content-Type never makes a body refused, it only says which."""
    text = body.strip()
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        broken = _where_it_broke(body, exc) if is_json_type(mimetype) else None
        if not accept_base64 or text[:1] in (b"{", b"[", b'"'):
            kind = "JSON or URL-safe Base64 of JSON" if accept_base64 else "JSON"
            raise broken or Unsupported(f"body is not {kind}") from None
    try:
        decoded = base64.b64decode(text.translate(_STD_ALPHABET) + b"=" * (-len(text) % 4), validate=True)
        return json.loads(decoded)
    except (binascii.Error, ValueError, RecursionError):
        raise broken or Unsupported("body is neither JSON nor URL-safe Base64 of JSON") from None

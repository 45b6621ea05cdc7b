"""Console sign-in: an admin token (``[admin] token`` or one of ``[admin] tokens``) buys a signed
session cookie naming who signed in; every POST carries that session's CSRF token.

The cookie is signed with a key derived from the configured tokens, so every gunicorn worker and
host with the same configuration accepts it, and removing or changing a token ends its sessions.
It is HttpOnly, SameSite=Strict, and Secure when the request came over HTTPS (X-Forwarded-Proto
from a trusted proxy counts). It holds who, a CSRF token and an expiry: never the admin token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from flask import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.core.config import Settings

COOKIE = "mediahook_console"
LOGIN_COOKIE = "mediahook_console_login"  # a nonce the login form's CSRF token is bound to
SESSION_SECONDS = 12 * 3600
LOGIN_FORM_SECONDS = 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Session:
    who: str
    csrf: str


def _fingerprint(token: str) -> str:
    return hashlib.sha256(b"mediahook console\0" + token.encode()).hexdigest()[:16]


def _serializer(settings: Settings, salt: str) -> URLSafeTimedSerializer | None:
    if not settings.admin_tokens:
        return None
    material = "\0".join(f"{name}={token}" for name, token in settings.admin_tokens)
    key = hashlib.sha256(b"mediahook console session key\0" + material.encode()).digest()
    return URLSafeTimedSerializer(key, salt=salt)


def session_of(req: Request, settings: Settings) -> Session | None:
    """The request's valid session, or None (no cookie, bad signature, expired, token gone)."""
    raw = req.cookies.get(COOKIE)
    signer = _serializer(settings, "session")
    if not raw or signer is None:
        return None
    try:
        doc = signer.loads(raw, max_age=SESSION_SECONDS)
    except BadSignature:
        return None
    tokens = dict(settings.admin_tokens)
    if not isinstance(doc, dict) or doc.get("who") not in tokens:
        return None
    if doc.get("fp") != _fingerprint(tokens[doc["who"]]):  # that name's token changed since
        return None
    return Session(doc["who"], doc["csrf"])


def start_session(response: Response, req: Request, settings: Settings, who: str) -> None:
    signer = _serializer(settings, "session")
    assert signer is not None
    value = signer.dumps({"who": who, "csrf": secrets.token_urlsafe(24),
                          "fp": _fingerprint(dict(settings.admin_tokens)[who])})
    _set(response, req, COOKIE, value, SESSION_SECONDS)
    response.delete_cookie(LOGIN_COOKIE, path="/console")


def end_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/console")


def _set(response: Response, req: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/console", httponly=True, samesite="Strict",
                        secure=req.is_secure)


def csrf_ok(req: Request, session: Session) -> bool:
    given = req.form.get(CSRF_FIELD) or req.headers.get(CSRF_HEADER) or ""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), session.csrf.encode())


# --- the login form's own CSRF token (there is no session yet) ------------------------------------

def login_form_token(req: Request, response_cookies: dict[str, str], settings: Settings) -> str:
    """A token for the login form, bound to a nonce cookie (set by the caller from
    ``response_cookies``): a form posted from another site lacks the cookie or the token."""
    nonce = req.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
    response_cookies[LOGIN_COOKIE] = nonce
    signer = _serializer(settings, "login") or URLSafeTimedSerializer(secrets.token_bytes(32), salt="login")
    return signer.dumps(nonce)


def set_login_cookie(response: Response, req: Request, nonce: str) -> None:
    _set(response, req, LOGIN_COOKIE, nonce, LOGIN_FORM_SECONDS)


def login_form_ok(req: Request, settings: Settings) -> bool:
    signer = _serializer(settings, "login")
    nonce = req.cookies.get(LOGIN_COOKIE)
    if signer is None or not nonce:
        return False
    try:
        return hmac.compare_digest(str(signer.loads(req.form.get(CSRF_FIELD, ""), max_age=LOGIN_FORM_SECONDS)),
                                   nonce)
    except BadSignature:
        return False

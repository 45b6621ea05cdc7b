"""The one way the ``mediahook`` operator commands reach the service: the admin API.

Remote (``MEDIAHOOK_URL`` + ``MEDIAHOOK_ADMIN_TOKEN``, or ``url`` and ``token`` in
``~/.config/mediahook/cli.toml``): HTTP to /api/, from any machine that reaches it. Local (on a
host with the service's configuration): the same admin API blueprint run in-process against Redis,
with a token made up for this one command. Either way a command gets the API's own documents
(dumped by app/admin/schemas.py), so its output is the same in both modes, and a local action is
audited like an API one (as ``cli:<user>``).
"""

from __future__ import annotations

import getpass
import logging
import os
import secrets
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import click

URL_ENV, TOKEN_ENV, CONFIG_ENV = "MEDIAHOOK_URL", "MEDIAHOOK_ADMIN_TOKEN", "MEDIAHOOK_CLI_CONFIG"
CONFIG_KEYS = ("url", "token", "timeout")
DEFAULT_TIMEOUT = 30.0


class Client(Protocol):
    where: str

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
             body: Mapping[str, Any] | None = None) -> dict[str, Any]: ...


class ApiError(click.ClickException):
    """An answer of 4xx/5xx from the admin API, shown as its message (and field errors)."""

    def __init__(self, status: int, doc: Mapping[str, Any]) -> None:
        message = str(doc.get("message") or f"HTTP {status}")
        errors = doc.get("errors") or {}
        if errors:
            message += ": " + "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in sorted(errors.items()))
        super().__init__(message)
        self.status = status


def path(*parts: str) -> str:
    """/api/ + parts, each quoted: ids come from people and may hold anything."""
    return "/api/" + "/".join(quote(p, safe="") for p in parts)


# --- choosing the mode ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Remote:
    url: str
    token: str
    timeout: float


def config_path(env: Mapping[str, str]) -> Path:
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "mediahook" / "cli.toml"


def _read_config(file: Path, env: Mapping[str, str]) -> dict[str, Any]:
    if not file.is_file():
        if env.get(CONFIG_ENV):
            raise click.ClickException(f"{CONFIG_ENV}={file}: no such file")
        return {}
    try:
        data = tomllib.loads(file.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise click.ClickException(f"{file}: {exc}") from None
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise click.ClickException(f"{file}: unknown key {unknown[0]!r} (known: {', '.join(CONFIG_KEYS)})")
    if "token" in data and file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise click.ClickException(f"{file} holds a token but others may read it "
                                   f"(mode {stat.S_IMODE(file.stat().st_mode):04o}): chmod 600 {file}")
    return data


def remote_target(env: Mapping[str, str]) -> Remote | None:
    """Where the API is, when the CLI should use it: the environment first, then cli.toml."""
    file = config_path(env)
    data = _read_config(file, env)
    url = env.get(URL_ENV) or data.get("url")
    if not url:
        return None
    where = URL_ENV if env.get(URL_ENV) else f"url in {file}"
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.ClickException(f"{where}: {url!r} is not an http(s):// URL with a host")
    token = env.get(TOKEN_ENV) or data.get("token")
    if not token or not isinstance(token, str):
        raise click.ClickException(f"{where} is set but no admin token: set {TOKEN_ENV} or token in {file}")
    timeout = data.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise click.ClickException(f"{file}: timeout must be a number of seconds above 0")
    base = str(url).rstrip("/")
    if base.endswith("/api"):  # the API's own prefix, given by mistake: every path starts with it
        base = base[: -len("/api")]
    return Remote(base, token, float(timeout))


# --- remote: HTTP ---------------------------------------------------------------------------------

class HttpClient:
    def __init__(self, remote: Remote) -> None:
        import requests

        self._requests = requests
        self.where = remote.url
        self._timeout = remote.timeout
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {remote.token}"
        self._session.headers["User-Agent"] = "mediahook-cli"

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
             body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        requests = self._requests
        try:
            r = self._session.request(method, self.where + path, params=params, json=body,
                                      timeout=(min(5.0, self._timeout), self._timeout))
        except requests.Timeout:
            raise click.ClickException(f"the mediahook API at {self.where} did not answer within "
                                       f"{self._timeout:.0f} s") from None
        except requests.RequestException as exc:
            reason = exc.__class__.__name__
            if isinstance(exc, requests.exceptions.SSLError):  # a ConnectionError too: say which
                reason = "TLS failed (its certificate? REQUESTS_CA_BUNDLE names a CA file)"
            elif isinstance(exc, requests.ConnectionError):
                reason = "connection failed (is the URL right, and the service up?)"
            raise click.ClickException(f"cannot reach the mediahook API at {self.where}: {reason}") from None
        try:
            doc = r.json()
        except ValueError:
            doc = None
        if r.status_code == 401:
            raise click.ClickException(f"the mediahook API at {self.where} refused the token (401): check "
                                       f"{TOKEN_ENV} or the token in cli.toml")
        if not isinstance(doc, dict):
            raise click.ClickException(f"{self.where}{path} answered HTTP {r.status_code}, not the admin API's "
                                       f"JSON (is {URL_ENV} the service's own address, with /api/ reachable?)")
        if r.status_code >= 400:
            raise ApiError(r.status_code, doc)
        return doc


# --- local: the same blueprint in-process ---------------------------------------------------------

def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return "cli"


class LocalClient:
    def __init__(self, settings: Any) -> None:
        from flask import Flask

        from app.admin import api as admin
        from app.core.redis import connect

        self.where = "redis " + settings.redis_url.split("@")[-1]
        self._token = secrets.token_urlsafe(32)
        self._redis = connect(settings)
        app = Flask("mediahook.cli")
        # The API's own token check, with one token that lives as long as this process. Only
        # what admin.py reads of the web runtime: no ingest client, no spool, no drainer.
        app.extensions["mediahook"] = SimpleNamespace(
            settings=replace(settings, admin_tokens=((_who(), self._token),)),
            store=SimpleNamespace(redis=self._redis), drainer=None)
        app.register_blueprint(admin.bp)
        app.logger.setLevel(logging.ERROR)  # the API's "Redis unavailable" warning: said once, below
        self._client = app.test_client()
        self._checked = False

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
             body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        from redis.exceptions import RedisError

        from app.core.config import ConfigError

        if not self._checked:  # a clear line instead of the API's generic 503
            try:
                self._redis.ping()
            except (RedisError, ConfigError) as exc:
                raise click.ClickException(f"cannot reach Redis at {self.where.split(' ', 1)[1]}: "
                                           f"{exc.__class__.__name__}: {exc} (from another machine, set "
                                           f"{URL_ENV} to use the admin API)") from None
            self._checked = True
        r = self._client.open(path, method=method, query_string=dict(params or {}), json=body,
                              headers={"Authorization": f"Bearer {self._token}"})
        doc = r.get_json(silent=True)
        if not isinstance(doc, dict):
            raise click.ClickException(f"{path} answered HTTP {r.status_code} without a JSON document")
        if r.status_code >= 400:
            raise ApiError(r.status_code, doc)
        return doc

"""Redis connections: a plain URL or a Sentinel set, failing fast so an outage turns into a
spool write (web side) or a retried job (workers), never a hang."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as RedisRetry
from redis.sentinel import Sentinel, SentinelManagedConnection

from app.core.config import ConfigError, Settings

SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_DEFAULT_PORT = 26379
SENTINEL_URL_FORM = "redis+sentinel://[[user]:password@]host1[:26379][,host2[:26379]...]/<service_name>[/<db>]"

# A worker blocks in BLPOP for minutes on one connection: without keepalive, a master whose
# host vanished (no RST) would only be noticed at RQ's socket timeout (~7 min), long after a
# Sentinel failover. Dead peers are found in about 10 + 3 x 5 s instead (Linux; elsewhere the
# options the platform lacks are left at its defaults).
_KEEPALIVE = {"socket_keepalive": True, "socket_keepalive_options": {
    option: value for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if (option := getattr(socket, name, None)) is not None}}


@dataclass(frozen=True)
class SentinelURL:
    """What a ``redis+sentinel://`` URL names: the Sentinels to ask, the master's service name,
    the database, and the Redis servers' credentials (the userinfo). Sentinels with a password
    of their own are not supported yet: a secret in the query string would be shown wherever
    the URL is (check-config, logs), which only mask the userinfo."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


def _host_port(item: str) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6]:port
        host, _, rest = item[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
    if not host or (port and not port.isdigit()) or not 0 < int(port or SENTINEL_DEFAULT_PORT) < 65536:
        raise ValueError(f"bad Sentinel address {item!r}")
    return host, int(port or SENTINEL_DEFAULT_PORT)


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse ``SENTINEL_URL_FORM``; a ConfigError naming ``redis.url`` for anything else."""
    try:
        if not url.startswith(SENTINEL_SCHEME):
            raise ValueError("not a redis+sentinel:// URL")
        parts = urlsplit(url)
        userinfo, _, hosts = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        sentinels = tuple(_host_port(h) for h in hosts.split(","))
        path = [unquote(p) for p in parts.path.strip("/").split("/")] if parts.path.strip("/") else []
        if not 1 <= len(path) <= 2 or not path[0]:
            raise ValueError("the path must be /<service_name> or /<service_name>/<db>")
        if len(path) == 2 and not path[1].isdigit():
            raise ValueError(f"db must be a number, not {path[1]!r}")
        if parts.query or parts.fragment:
            raise ValueError("no query string or fragment is understood")
        return SentinelURL(sentinels=sentinels, service_name=path[0], db=int(path[1]) if len(path) == 2 else 0,
                           username=unquote(user) or None, password=unquote(password) or None)
    except ValueError as exc:
        raise ConfigError(f"redis.url: {exc}; expected {SENTINEL_URL_FORM}") from None


def _client_options(settings: Settings, socket_timeout: float | None = None) -> dict[str, Any]:
    # With a ``socket_timeout`` of its own (the web side's ingest client), a timeout is not
    # retried: the retry would double the very wait the short timeout is there to bound.
    retry_on = (RedisConnectionError,) if socket_timeout is not None else (RedisConnectionError, RedisTimeoutError)
    return {
        "socket_timeout": settings.redis_socket_timeout if socket_timeout is None else socket_timeout,
        "socket_connect_timeout": settings.redis_connect_timeout if socket_timeout is None
        else min(settings.redis_connect_timeout, socket_timeout),
        "health_check_interval": 30,
        # One immediate retry covers a pooled connection that died with a Redis restart (or a
        # failover); the ingest script is idempotent by event id, so a retried write cannot double.
        "retry": RedisRetry(NoBackoff(), 1, supported_errors=retry_on),
    }


class _SentinelConnection(SentinelManagedConnection):
    """redis-py's Sentinel connection, but dropped when a read is interrupted, like every other
    redis-py connection. Upstream it is kept (``disconnect_on_error`` defaults to False there:
    redis/redis-py#4292), so the next command on it gets the interrupted one's reply, or waits
    behind a blocking one: an RQ worker told to stop while it waited on the queue (SIGTERM
    raises inside BLPOP) then hung in its last write until systemd killed it."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("disconnect_on_error", True)
        return super().read_response(*args, **kwargs)


def sentinel_master(url: SentinelURL, settings: Settings, socket_timeout: float | None = None) -> Redis:
    """A client of the current master of ``url.service_name``.

    Each new connection asks the Sentinels where the master is; a connection to a master that
    went away (or was demoted: READONLY) is dropped, so the next command goes to the new one.
    Until the Sentinels have promoted a replica, commands fail fast with a ConnectionError
    (MasterNotFoundError), which the web side turns into a spool write.
    """
    sentinel = Sentinel(
        list(url.sentinels),
        # A dead Sentinel must cost one quick failure, then the next one is asked: no retries.
        sentinel_kwargs={"socket_timeout": settings.redis_connect_timeout,
                         "socket_connect_timeout": settings.redis_connect_timeout,
                         "retry": RedisRetry(NoBackoff(), 0)},
    )
    return sentinel.master_for(url.service_name, connection_class=_SentinelConnection, db=url.db,
                               username=url.username, password=url.password,
                               **_client_options(settings, socket_timeout),
                               **_KEEPALIVE)


def connect(settings: Settings, socket_timeout: float | None = None) -> Redis:
    """A client that fails fast, so a Redis outage turns into a spool write, not a hang.

    ``redis.url`` may name a Sentinel set (``SENTINEL_URL_FORM``): the client then follows the
    master through failovers. The web side, the spool drainer, the CLI and the workers all
    connect here, so they all follow it. ``socket_timeout`` overrides the configured one.
    """
    if settings.redis_url.startswith(SENTINEL_SCHEME):
        return sentinel_master(parse_sentinel_url(settings.redis_url), settings, socket_timeout)
    options = _client_options(settings, socket_timeout)
    if not settings.redis_url.startswith("unix://"):
        options.update(_KEEPALIVE)
    return Redis.from_url(settings.redis_url, **options)

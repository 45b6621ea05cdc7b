"""The event store: records an event and queues its RQ job in one Redis round trip.

One Lua script does the whole write atomically: the delivery-dedup check, the event record,
its index entry and, for an event we handle, the RQ job hash and its place on the queue. It
mirrors what RQ's own ``unique=True`` enqueue script writes (job hash + RPUSH), with the job
hash built by RQ's ``Job.create(...).to_dict()`` so the job format stays RQ's.

Keys:
  mh:event:<id>        hash   the record (raw body, headers, source, type, status, times)
  mh:dedup:<sha256>    string the first event id for that source/endpoint and body (+ salt), for the window
  mh:dedup-last:<sha256> string the last event id recorded for a dedup scope (one stream), for the window
  mh:events            zset   event ids by received time (pruned past the retention)
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry as RedisRetry
from redis.sentinel import Sentinel, SentinelManagedConnection
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.serializers import DefaultSerializer
from rq.utils import now as rq_now
from rq.utils import utcformat

from app.breaker import INGEST_TIMEOUT_SECONDS, TRIPPING_ERRORS, Breaker
from app.settings import ConfigError, Settings
from workers.queues import EVENTS_QUEUE, PROCESS_EVENT

EVENT_PREFIX = "mh:event:"
DEDUP_PREFIX = "mh:dedup:"
DEDUP_LAST_PREFIX = "mh:dedup-last:"
EVENTS_INDEX = "mh:events"

# KEYS: dedup ('' = not deduplicated), event, index, job, queue, rq:queues, dedup-last ('' = no scope)
# ARGV: event id, dedup ttl, retention ttl, received_at, prune-before score, job id ('' for none),
#       sent_at ('' for none), keep-duplicate ('1' or ''), number of event field/value items,
#       event fields..., job fields...
#
# A dedup hit is a re-delivery only while the event it repeats is still the last one recorded
# for its scope (when it has one): a state that follows a different state is a new event even
# with the same bytes. A re-delivery that reaches Redis before its original (the original was
# spooled) gives the record the original's earlier times, so the first delivery's time is kept.
# A spooled event was answered with its own id, so when it turns out to be a duplicate it is
# kept (keep-duplicate) as a record with status "duplicate" and ``duplicate_of``, and no job:
# every id ever acknowledged can be looked up.
INGEST_SCRIPT = """
if KEYS[1] ~= '' then
  local existing = redis.call('GET', KEYS[1])
  if existing and (KEYS[7] == '' or redis.call('GET', KEYS[7]) == existing) then
    if existing ~= ARGV[1] then
      local record = '""" + EVENT_PREFIX + """' .. existing
      local at = redis.call('HGET', record, 'received_at')
      if at and tonumber(ARGV[4]) < tonumber(at) then
        redis.call('HSET', record, 'received_at', ARGV[4])
        if ARGV[7] ~= '' then redis.call('HSET', record, 'sent_at', ARGV[7])
        else redis.call('HDEL', record, 'sent_at') end
        redis.call('ZADD', KEYS[3], 'XX', ARGV[4], existing)
      end
      if ARGV[8] ~= '' then
        local n = tonumber(ARGV[9])
        redis.call('HSET', KEYS[2], unpack(ARGV, 10, 9 + n))
        redis.call('HSET', KEYS[2], 'status', 'duplicate', 'duplicate_of', existing)
        redis.call('HDEL', KEYS[2], 'job_id')
        redis.call('EXPIRE', KEYS[2], ARGV[3])
      end
    end
    return {0, existing}
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, ARGV[1]} end
if KEYS[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
if KEYS[7] ~= '' then redis.call('SET', KEYS[7], ARGV[1], 'EX', ARGV[2]) end
local n = tonumber(ARGV[9])
redis.call('HSET', KEYS[2], unpack(ARGV, 10, 9 + n))
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[5])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[4], unpack(ARGV, 10 + n))
  redis.call('RPUSH', KEYS[5], ARGV[6])
  redis.call('SADD', KEYS[6], KEYS[5])
end
return {1, ARGV[1]}
"""


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


def new_event_id(now: float) -> str:
    """Sortable by time: milliseconds in hex, then 48 random bits."""
    return f"{int(now * 1000):011x}{secrets.token_hex(6)}"


def dedup_digest(source: str, endpoint: str, body: bytes, salt: str = "") -> str:
    """The delivery-dedup key of a body; ``salt`` (e.g. a signed send time) sets apart
    deliveries whose bytes alone do not say whether they are the same request."""
    head = f"{source}/{endpoint}\0" + (f"{salt}\0" if salt else "")
    return hashlib.sha256(head.encode("utf-8", "surrogatepass") + body).hexdigest()


def scope_digest(source: str, endpoint: str, scope: str) -> str:
    """The key of what a body is a state of (one stream), for ``mh:dedup-last:``."""
    # surrogatepass: a JSON body may carry lone surrogates ("\ud800"), which are still its own
    return hashlib.sha256(f"{source}/{endpoint}\0{scope}".encode("utf-8", "surrogatepass")).hexdigest()


def job_id_for(event_id: str) -> str:
    return f"event-{event_id}"


@dataclass
class Event:
    """One callback as received; what the record and the spool file hold."""

    id: str
    source: str
    endpoint: str
    type: str
    status: str  # queued | ignored (on arrival); processed | failed later
    received_at: float
    body: bytes
    headers: dict[str, str]
    refs: dict[str, Any]
    remote_addr: str
    dedup: str  # '' when this delivery is not deduplicated (always recorded as its own event)
    sent_at: float | None = None  # the vendor's signed send time, when the request carries one
    dedup_scope: str = ""  # scope_digest() of what the body is a state of, or ''

    def fields(self) -> list[Any]:
        """The record as HSET field/value items."""
        items: list[Any] = [
            "id", self.id, "source", self.source, "endpoint", self.endpoint, "type", self.type,
            "status", self.status, "received_at", repr(self.received_at), "body", self.body,
            "headers", json.dumps(self.headers, separators=(",", ":")),
            "refs", json.dumps(self.refs, separators=(",", ":")),
            "remote_addr", self.remote_addr, "dedup", self.dedup,
        ]
        if self.sent_at is not None:
            items += ["sent_at", repr(self.sent_at)]
        if self.status == "queued":
            items += ["job_id", job_id_for(self.id)]
        return items


# Deciding an event's actions only touches Redis; a few spaced retries ride out a hiccup
# (processing is idempotent), and what still fails is in RQ's failed registry for a replay.
EVENT_JOB_RETRY = Retry(max=3, interval=[5, 30, 120])

# Job hash fields that differ per event; every other field is the same for all event jobs.
_VARYING_JOB_FIELDS = ("created_at", "enqueued_at", "data", "description")


class EventStore:
    """Holds the Redis client, the ingest script and the event-job template for one process."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        # Callbacks are written through a client of their own with a short timeout, behind a
        # circuit breaker (app/breaker.py): a hung Redis costs one short wait, then the spool.
        self.ingest_redis = connect(settings, min(settings.redis_socket_timeout, INGEST_TIMEOUT_SECONDS))
        self.breaker = Breaker(self.ingest_redis.ping)
        self.queue = Queue(EVENTS_QUEUE, connection=redis)
        self._sha = hashlib.sha1(INGEST_SCRIPT.encode()).hexdigest()
        self._job_constant = self._constant_job_items()

    def _new_job(self, event_id: str) -> Job:
        job = Job.create(PROCESS_EVENT, args=(event_id,), id=job_id_for(event_id), connection=self.redis,
                         status=JobStatus.QUEUED, origin=self.queue.name, timeout=self.settings.job_timeout_seconds,
                         result_ttl=86400, failure_ttl=self.settings.retention_seconds,
                         description=f"process event {event_id}", retry=EVENT_JOB_RETRY)
        job.enqueued_at = rq_now()
        return job

    def _constant_job_items(self) -> list[Any]:
        """RQ's own job hash for an event job, less the fields that vary: built once."""
        items: list[Any] = []
        for key, value in self._new_job("template").to_dict().items():
            if value is not None and key not in _VARYING_JOB_FIELDS:
                items += [key, value if isinstance(value, (bytes, str)) else str(value)]
        return items

    def _job_items(self, event_id: str) -> list[Any]:
        """The job hash RQ's ``Job.create(...).to_dict()`` would write, in a fraction of its time
        (tests/test_store.py checks the two agree)."""
        stamp = utcformat(rq_now())
        data = zlib.compress(DefaultSerializer.dumps((PROCESS_EVENT, None, (event_id,), {})))
        return [*self._job_constant, "created_at", stamp, "enqueued_at", stamp, "data", data,
                "description", f"process event {event_id}"]

    def _args(self, event: Event, keep_duplicate: bool = False) -> list[Any]:
        s = self.settings
        job_items = self._job_items(event.id) if event.status == "queued" else []
        job_id = job_id_for(event.id) if job_items else ""
        event_items = event.fields()
        return [self._sha, 7, DEDUP_PREFIX + event.dedup if event.dedup else "", EVENT_PREFIX + event.id, EVENTS_INDEX,
                Job.key_for(job_id) if job_id else "", self.queue.key, Queue.redis_queues_keys,
                DEDUP_LAST_PREFIX + event.dedup_scope if event.dedup and event.dedup_scope else "",
                event.id, s.dedup_window_seconds, s.retention_seconds, repr(event.received_at),
                repr(event.received_at - s.retention_seconds), job_id,
                "" if event.sent_at is None else repr(event.sent_at), "1" if keep_duplicate else "",
                len(event_items), *event_items, *job_items]

    def ingest_many(self, events: list[Event], keep_duplicate: bool = False) -> list[tuple[bool, str] | Exception]:
        """Ingest several events in one round trip (a non-transactional pipeline of script
        calls, each atomic on its own). Per event: (created, event_id) or the error it met.
        ``keep_duplicate``: for events already acknowledged with their own id (from the
        spool), a duplicate is kept as a record with status ``duplicate`` and ``duplicate_of``
        (no job), so that id can still be looked up.
        Raises redis.RedisError when the round trip itself fails (at once while the breaker
        is open)."""
        self.breaker.check()
        args = [self._args(e, keep_duplicate) for e in events]
        try:
            results = self._send(args)
            if any(isinstance(r, NoScriptError) for r in results):
                # Redis restarted (or flushed its script cache): load the script, send those again.
                self.ingest_redis.script_load(INGEST_SCRIPT)
                redo = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
                for i, result in zip(redo, self._send([args[i] for i in redo]), strict=True):
                    results[i] = result
        except TRIPPING_ERRORS as exc:
            self.breaker.trip(exc)
            raise
        out: list[tuple[bool, str] | Exception] = []
        for result in results:
            if isinstance(result, Exception):
                out.append(result)
            else:
                created, event_id = result
                out.append((bool(created), event_id.decode() if isinstance(event_id, bytes) else event_id))
        return out

    def _send(self, args: list[list[Any]]) -> list[Any]:
        if len(args) == 1:
            try:
                return [self.ingest_redis.execute_command("EVALSHA", *args[0])]
            except NoScriptError as exc:
                return [exc]
        pipe = self.ingest_redis.pipeline(transaction=False)
        for a in args:
            pipe.execute_command("EVALSHA", *a)
        return pipe.execute(raise_on_error=False)

    def ingest(self, event: Event, keep_duplicate: bool = False) -> tuple[bool, str]:
        """Record the event and queue its job, unless it is a duplicate delivery.

        Returns (created, event_id); for a duplicate, the id of the first delivery.
        Raises redis.RedisError when Redis cannot be reached: the caller spools.
        """
        result = self.ingest_many([event], keep_duplicate)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def get(self, event_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(EVENT_PREFIX + event_id)
        if not raw:
            return None
        record: dict[str, Any] = {k.decode(): v for k, v in raw.items()}
        for key, value in record.items():
            if key != "body":
                record[key] = value.decode("utf-8", "replace")
        for key in ("headers", "refs"):
            record[key] = json.loads(record.get(key) or "{}")
        return record

    def ping(self) -> bool:
        """Whether Redis answers, within the ingest client's short timeout: an answer closes
        the breaker, a timeout or connection error opens it."""
        try:
            ok = bool(self.ingest_redis.ping())
        except TRIPPING_ERRORS as exc:
            self.breaker.trip(exc)
            return False
        except Exception:  # any failure means "not reachable" to a health check
            return False
        self.breaker.close()
        return ok

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
import zlib
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import NoScriptError
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.serializers import DefaultSerializer
from rq.utils import now as rq_now
from rq.utils import utcformat

from app.core.breaker import TRIPPING_ERRORS, Breaker
from app.core.config import Settings
from app.core.queues import EVENTS_QUEUE, PROCESS_EVENT
from app.core.redis import connect

EVENT_PREFIX = "mh:event:"
DEDUP_PREFIX = "mh:dedup:"
DEDUP_LAST_PREFIX = "mh:dedup-last:"
EVENTS_INDEX = "mh:events"

# An event's status: queued (its job is on the events queue), ignored (a type we do not handle:
# recorded, no job), processed (its job decided the actions), duplicate (a spooled re-delivery
# kept so its acknowledged id can be looked up).
QUEUED, IGNORED, PROCESSED, DUPLICATE = "queued", "ignored", "processed", "duplicate"
EVENT_STATUSES = (QUEUED, IGNORED, PROCESSED)  # what listings filter on

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


# Record fields stored as JSON text (``actions`` and ``notes`` are added by the event job).
JSON_FIELDS = ("headers", "refs", "actions", "notes")


def read_event(redis: Redis, event_id: str) -> dict[str, Any] | None:
    """An event's record as stored (no secrets masked: that is for whoever shows it): text
    fields decoded, the JSON ones parsed, ``body`` the raw bytes. None when there is none."""
    raw = redis.hgetall(EVENT_PREFIX + event_id)
    if not raw:
        return None
    record: dict[str, Any] = {k.decode(): v if k == b"body" else v.decode("utf-8", "replace")
                              for k, v in raw.items()}
    for key in JSON_FIELDS:
        if record.get(key):
            record[key] = json.loads(record[key])
    return record


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
        if self.status == QUEUED:
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
        # circuit breaker (app/core/breaker.py): a hung Redis costs one short wait, then the spool.
        self.ingest_redis = connect(settings, settings.redis_ingest_timeout)
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
        settings = self.settings
        job_items = self._job_items(event.id) if event.status == QUEUED else []
        job_id = job_id_for(event.id) if job_items else ""
        event_items = event.fields()
        return [self._sha, 7, DEDUP_PREFIX + event.dedup if event.dedup else "", EVENT_PREFIX + event.id, EVENTS_INDEX,
                Job.key_for(job_id) if job_id else "", self.queue.key, Queue.redis_queues_keys,
                DEDUP_LAST_PREFIX + event.dedup_scope if event.dedup and event.dedup_scope else "",
                event.id, settings.dedup_window_seconds, settings.retention_seconds, repr(event.received_at),
                repr(event.received_at - settings.retention_seconds), job_id,
                "" if event.sent_at is None else repr(event.sent_at), "1" if keep_duplicate else "",
                len(event_items), *event_items, *job_items]

    def ingest(self, event: Event, keep_duplicate: bool = False) -> tuple[bool, str]:
        """Record the event and queue its job, unless it is a duplicate delivery.

        Returns (created, event_id); for a duplicate, the id of the first delivery.
        ``keep_duplicate``: for an event already acknowledged with its own id (from the spool),
        a duplicate is kept as a record with status ``duplicate`` and ``duplicate_of`` (no job),
        so that id can still be looked up.
        Raises redis.RedisError when Redis cannot be reached (at once while the breaker is
        open): the caller spools.
        """
        self.breaker.check()
        args = self._args(event, keep_duplicate)
        try:
            try:
                created, event_id = self._call(args)
            except NoScriptError:
                # Redis restarted (or flushed its script cache): load the script, send it again.
                self.ingest_redis.script_load(INGEST_SCRIPT)
                created, event_id = self._call(args)
        except TRIPPING_ERRORS as exc:
            self.breaker.trip(exc)
            raise
        return bool(created), event_id.decode() if isinstance(event_id, bytes) else event_id

    def _call(self, args: list[Any]) -> list[Any]:
        return self.ingest_redis.execute_command("EVALSHA", *args)

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

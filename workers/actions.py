"""Actions: the follow-up calls an event leads to, each its own RQ job with its own retries.

An action's id is its idempotency key (e.g. ``transcode-<video>-<rung>``) and its RQ job id,
enqueued with ``unique=True``: a second callback, a replay or a retry of the event job never
queues it twice. Its record ``mh:action:<id>`` keeps status, attempts and the last error
(vendor code and message) so a failure is explained, listed and replayable.

An action queued by an event job makes its first attempt inside that job (no second RQ job, no
queue wait): see "the first attempt, inside the event job" below. Its own RQ job is still saved,
and carries everything after the first attempt.

Failures: a transient ``VendorError`` (or an unexpected exception) is retried on the RQ
``Retry`` schedule (exponential, jittered, ``Retry-After`` honoured); a permanent one fails at
once, keeping the vendor's code and message.

Every kind of action is one entry of ``KINDS`` (its vendor, config section and job), and every
job body runs inside ``running`` (see docs/architecture.md, "Actions").
"""

from __future__ import annotations

import calendar
import hashlib
import json
import logging
import math
import random
import re
import time
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from rq import Queue, Retry, get_current_job
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.results import Result
from rq.scripts import UNIQUE_ENQUEUE_SCRIPT, UNIQUE_SCHEDULE_SCRIPT
from rq.timeouts import JobTimeoutException
from rq.utils import now as rq_now

from app.core import counters, logs
from app.core.config import Settings
from app.core.queues import ACTIONS_QUEUE, FAILED_INDEX
from app.core.redact import redact
from app.core.vendor_config import HttpPolicy
from workers import context, locks, vendor_control
from workers.clients import flighthub, http, koophone, metastudio, muducloud
from workers.clients.http import VendorError

log = logging.getLogger(__name__)


# --- the registry: every kind of action, as data ----------------------------------------------

@dataclass(frozen=True)
class Action:
    """One kind of action. ``vendor`` is the vendor it calls (the ``vendor`` label of its metrics,
    what a pause holds); ``section`` the Settings attribute configuring that vendor (its retry
    policy for a requeue, its timeouts for the lock wait); ``job`` the dotted path RQ runs (a
    path, not a function object: the registry is whole in every process, web side included,
    without importing the job modules)."""

    kind: str
    vendor: str
    section: str
    job: str

    @property
    def module(self) -> str:
        return self.job.rsplit(".", 1)[0]


TRANSCODE_SUBMIT = Action("transcode.submit", muducloud.VENDOR, muducloud.SECTION, "workers.transcode.submit")
TRANSCODE_POLL = Action("transcode.poll", muducloud.VENDOR, muducloud.SECTION, "workers.transcode.poll")
CONVERTER_RECONCILE = Action("converter.reconcile", flighthub.VENDOR, flighthub.SECTION,
                             "workers.converter.reconcile")
VIDEO_SETTINGS_RECONCILE = Action("video_settings.reconcile", koophone.VENDOR, koophone.SECTION,
                                  "workers.video_settings.reconcile")
VIDEO_SETTINGS_APPLY = Action("video_settings.apply", koophone.VENDOR, koophone.SECTION,
                              "workers.video_settings.apply")
LIVE_START = Action("live.start", metastudio.VENDOR, metastudio.SECTION, "workers.live.start")

KINDS: dict[str, Action] = {a.kind: a for a in (
    TRANSCODE_SUBMIT, TRANSCODE_POLL, CONVERTER_RECONCILE, VIDEO_SETTINGS_RECONCILE, VIDEO_SETTINGS_APPLY, LIVE_START)}
# Kinds an earlier version wrote into action records (and metrics): read as their new name.
RENAMED = {"koophone.apply": VIDEO_SETTINGS_RECONCILE.kind}


def action_of(kind: str | None) -> Action | None:
    """The registered action of a kind (an old name too), or None."""
    return KINDS.get(RENAMED.get(kind or "", kind or ""))


def vendor_of(kind: str | None) -> str | None:
    found = action_of(kind)
    return found.vendor if found else None


def policy(settings: Settings | None, kind: str | None) -> HttpPolicy | None:
    """The retry policy of the vendor an action calls (for a requeue); None if not configured."""
    found = action_of(kind)
    section = getattr(settings, found.section, None) if settings is not None and found else None
    return section.http if section is not None else None

ACTION_PREFIX = "mh:action:"
EVENT_ACTIONS_PREFIX = "mh:event-actions:"
# Actions not final (queued, running, retrying), by when they got there: what workers.sweep checks
# for a lost job without scanning every action record.
OPEN_INDEX = "mh:actions:open"
FINAL_STATUSES = frozenset({"succeeded", "skipped", "failed"})
ACTION_TTL = 30 * 86400


# RQ's own rule for a job id (rq.job.JOB_ID_PATTERN): action ids built from vendor ids may break it.
_JOB_ID_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_JOB_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def job_id(action_id: str) -> str:
    """The RQ job id of an action: the action id itself when RQ accepts it, else its safe
    characters plus a hash of the whole id (so two ids that differ only in unsafe characters,
    "a.b" and "a:b", never share a job). The action record keeps the readable id."""
    if _JOB_ID_SAFE.fullmatch(action_id):
        return action_id
    digest = hashlib.sha256(action_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{_JOB_ID_UNSAFE.sub('_', action_id)[:150]}-x{digest}"


class Skip(Exception):
    """Nothing to do (superseded, already done): the action ends as ``skipped`` with this reason."""


# The ``outcome`` of an action whose call may or may not have taken effect at the vendor.
OUTCOME_UNKNOWN = "unknown"
# Action record field set (HSETNX) right before a call that is not idempotent, cleared when the
# call certainly did nothing: an action that ends with it still set may have had its effect.
INTENT_AT = "intent_at"


class OutcomeUnknown(VendorError):
    """A call that is not idempotent may have taken effect (sent, then no answer, or a gateway
    error): the action fails for good with ``outcome`` = ``unknown``, and nothing runs it again
    by itself (not RQ, a bulk requeue or a replay): a person checks the vendor first."""

    def __init__(self, vendor: str, message: str, *, code: str | int | None = None, status: int | None = None) -> None:
        super().__init__(vendor, message, transient=False, code=code, status=status)


def is_outcome_unknown(doc: dict[str, Any] | None) -> bool:
    """Whether an action record (or a failed item) is one whose effect at the vendor is unknown."""
    return bool(doc) and doc.get("outcome") == OUTCOME_UNKNOWN


def retry_schedule(policy: HttpPolicy, rng: random.Random | None = None) -> Retry | None:
    """Exponential backoff with ±20 % jitter: base, 2×base, 4×base … capped at the max."""
    if policy.retry_attempts <= 0:
        return None
    rng = rng or random.Random()
    intervals = []
    for attempt in range(policy.retry_attempts):
        delay = min(policy.retry_base_seconds * 2 ** attempt, policy.retry_max_seconds)
        intervals.append(max(0, round(delay * rng.uniform(0.8, 1.2))))
    return Retry(max=policy.retry_attempts, interval=intervals)


def _now() -> str:
    return repr(time.time())


def record(redis: Redis, action_id: str) -> dict[str, Any] | None:
    raw = redis.hgetall(ACTION_PREFIX + action_id)
    if not raw:
        return None
    doc = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
    for key in ("params", "last_error", "result"):
        if doc.get(key):
            doc[key] = json.loads(doc[key])
    doc["attempts"] = int(doc.get("attempts", 0))
    return doc


def event_actions(redis: Redis, event_id: str) -> list[dict[str, Any]]:
    ids = sorted(m.decode() for m in redis.smembers(EVENT_ACTIONS_PREFIX + event_id))
    return [doc for doc in (record(redis, i) for i in ids) if doc]


def enqueue(redis: Redis, action_id: str, action: Action, *, event_id: str | None, params: dict[str, Any],
            policy: HttpPolicy | None, delay: float | None = None, timeout: int = 300) -> str:
    """Queue an action once (its job: ``action.job``, called with ``params``). Returns "queued",
    "exists" (already queued, running or done) or "requeued" (it had failed for good; a replay
    runs it again).

    Inside ``first_attempts_here`` (the event job), a new action without a delay gets its job
    saved but not pushed: the event job runs its first attempt itself (``run_first_attempts``)."""
    kind = action.kind
    key = ACTION_PREFIX + action_id
    batch = _batch.get()
    here = batch is not None and not delay
    pipe = redis.pipeline()
    _record_writes(pipe, action_id, kind, event_id, params)
    if event_id:
        pipe.sadd(EVENT_ACTIONS_PREFIX + event_id, action_id)
        pipe.expire(EVENT_ACTIONS_PREFIX + event_id, ACTION_TTL)
    if here:
        # While this job is live the sweep counts the action live too (its own job is in no queue),
        # and the action's job is saved (once) in the same round trip, not pushed.
        pipe.hset(key, RUN_BY, batch.job_id)
        job = _kept_job(redis, pipe, action_id, action.job, kind=kind, params=params, policy=policy,
                        timeout=timeout)
        if pipe.execute()[-1]:
            batch.jobs.append(job)
            return "queued"
    else:
        pipe.execute()
        try:
            _enqueue_job(redis, action_id, action.job, kind=kind, params=params, policy=policy, delay=delay,
                         timeout=timeout)
            return "queued"
        except DuplicateJobError:
            pass
    # A newer event's params replace the old ones: what runs is what the record shows.
    return "requeued" if requeue(redis, action_id, policy, params=params) else "exists"


def _record_writes(pipe: Any, action_id: str, kind: str, event_id: str | None, params: dict[str, Any]) -> None:
    """An action's record, as queued (a repeat keeps what it had: first time, status, attempts).
    Its place in its event's set is the caller's to write (several actions of an event: one SADD)."""
    key = ACTION_PREFIX + action_id
    pipe.hsetnx(key, "created_at", _now())
    # The record is for people to read: secrets (a stream_key) stay in the RQ job only.
    pipe.hset(key, mapping={"id": action_id, "kind": kind, "params": json.dumps(redact(params), sort_keys=True)})
    pipe.hsetnx(key, "status", "queued")
    pipe.hsetnx(key, "attempts", 0)
    if event_id:
        pipe.hsetnx(key, "event_id", event_id)
    pipe.expire(key, ACTION_TTL)
    # nx: a repeat keeps its first time; a repeat of a finished action is dropped by the sweep.
    pipe.zadd(OPEN_INDEX, {action_id: time.time()}, nx=True)


@dataclass(frozen=True)
class ToQueue:
    """One action for ``enqueue_many``: the arguments of ``enqueue``."""

    action_id: str
    action: Action
    params: dict[str, Any]
    event_id: str | None = None
    policy: HttpPolicy | None = None
    delay: float | None = None
    timeout: int = 300


def enqueue_many(redis: Redis, items: list[ToQueue], pipe: Any = None) -> list[str]:
    """``enqueue`` for several actions in one round trip: their records and their jobs' unique
    saves (kept for the event job, or scheduled) go out in ``pipe``, a transaction the caller may
    have put its own writes in (sent with them: all or none), or in a new one. A job neither kept
    nor delayed is queued right after, as ``enqueue`` does. Returns ``enqueue``'s answer for each."""
    pipe = pipe if pipe is not None else redis.pipeline()
    batch = _batch.get()
    saves: list[tuple[ToQueue, Job | None, int | None]] = []  # (item, job kept here, index of its save's reply)
    by_event: dict[str, list[str]] = {}
    for item in items:
        kind, here = item.action.kind, batch is not None and not item.delay
        _record_writes(pipe, item.action_id, kind, item.event_id, item.params)
        if item.event_id:
            by_event.setdefault(item.event_id, []).append(item.action_id)
        options = dict(kind=kind, params=item.params, policy=item.policy, timeout=item.timeout)
        if here:
            pipe.hset(ACTION_PREFIX + item.action_id, RUN_BY, batch.job_id)  # as in enqueue
            saves.append((item, _kept_job(redis, pipe, item.action_id, item.action.job, **options), len(pipe) - 1))
        elif item.delay:
            _scheduled_job(redis, pipe, item.action_id, item.action.job, delay=item.delay, **options)
            saves.append((item, None, len(pipe) - 1))
        else:
            saves.append((item, None, None))
    for event_id, ids in by_event.items():
        pipe.sadd(EVENT_ACTIONS_PREFIX + event_id, *ids)
        pipe.expire(EVENT_ACTIONS_PREFIX + event_id, ACTION_TTL)
    replies = pipe.execute()
    out = []
    for item, kept, at in saves:
        if at is None:
            try:
                _enqueue_job(redis, item.action_id, item.action.job, kind=item.action.kind, params=item.params,
                             policy=item.policy, timeout=item.timeout)
                out.append("queued")
                continue
            except DuplicateJobError:
                pass
        elif replies[at]:
            if kept is not None:
                batch.jobs.append(kept)
            out.append("queued")
            continue
        out.append("requeued" if requeue(redis, item.action_id, item.policy, params=item.params) else "exists")
    return out


def _job_options(action_id: str, kind: str, policy: HttpPolicy | None) -> dict[str, Any]:
    return dict(job_id=job_id(action_id), retry=retry_schedule(policy) if policy else None, result_ttl=ACTION_TTL,
                failure_ttl=ACTION_TTL, description=f"{kind} {action_id}", meta={"action_id": action_id})


def _enqueue_job(redis: Redis, action_id: str, func: str, *, kind: str, params: dict[str, Any],
                 policy: HttpPolicy | None, delay: float | None = None, timeout: int = 300) -> None:
    """Queue the action's RQ job (or schedule it, ``delay``), once: ``DuplicateJobError`` if it exists."""
    queue = Queue(ACTIONS_QUEUE, connection=redis)
    options = _job_options(action_id, kind, policy)
    if delay:
        queue.enqueue_in(_seconds(delay), func, kwargs=params, unique=True, job_timeout=timeout, **options)
    else:
        queue.enqueue(func, kwargs=params, unique=True, job_timeout=timeout, **options)


def _kept_job(redis: Redis, pipe: Any, action_id: str, func: str, *, kind: str, params: dict[str, Any],
              policy: HttpPolicy | None, timeout: int) -> Job:
    """The action's RQ job, saved by ``pipe`` unless one exists (RQ's own unique-save script, which
    replies 0 then) and pushed on no queue: its first attempt is run by the event job."""
    queue = Queue(ACTIONS_QUEUE, connection=redis)
    job = queue.create_job(func, kwargs=params, timeout=timeout, status=JobStatus.QUEUED,
                           **_job_options(action_id, kind, policy))
    job.enqueued_at = rq_now()
    # EVAL, not a Script object: redis-py checks a pipeline's Script objects with SCRIPT EXISTS
    # first (a round trip more); Redis keeps the compiled script by its hash either way.
    pipe.eval(UNIQUE_ENQUEUE_SCRIPT, 2, job.key, queue.key, job.id, "N", -1, *_job_fields(job))
    return job


def _scheduled_job(redis: Redis, pipe: Any, action_id: str, func: str, *, kind: str, params: dict[str, Any],
                   policy: HttpPolicy | None, timeout: int, delay: float) -> Job:
    """The action's RQ job, saved by ``pipe`` and scheduled ``delay`` seconds out unless one
    exists (RQ's own unique-schedule script, as ``enqueue_in(unique=True)`` runs it; 0 then)."""
    queue = Queue(ACTIONS_QUEUE, connection=redis)
    job = queue.create_job(func, kwargs=params, timeout=timeout, status=JobStatus.SCHEDULED,
                           **_job_options(action_id, kind, policy))
    due = rq_now() + _seconds(delay)
    pipe.eval(UNIQUE_SCHEDULE_SCRIPT, 3, job.key, queue.scheduled_job_registry.key, Queue.redis_queues_keys,
              job.id, job.ttl if job.ttl is not None else -1, calendar.timegm(due.utctimetuple()), queue.key,
              *_job_fields(job))
    return job


def _job_fields(job: Job) -> list[Any]:
    """A job's hash as the unique-save scripts take it (field, value, …), as RQ builds it."""
    return [part for name, value in job.to_dict().items() if value is not None
            for part in (name, value if isinstance(value, (bytes, str)) else str(value))]


def requeue(redis: Redis, action_id: str, policy: HttpPolicy | None = None,
            params: dict[str, Any] | None = None) -> bool:
    """Run an action that failed for good again, with a fresh retry schedule (and ``params``,
    when given, in place of the job's). False if it has not failed.

    An action can also be failed while its job finished: its effect ended badly later (a
    transcode task that failed at the vendor, see ``fail_later``). Its job is replaced by a new
    one with the same id. Never an action whose outcome is unknown (see ``OutcomeUnknown``)."""
    if redis.hget(ACTION_PREFIX + action_id, "outcome") == OUTCOME_UNKNOWN.encode():
        return False
    try:
        job = Job.fetch(job_id(action_id), connection=redis)
    except NoSuchJobError:
        return False
    status = job.get_status()
    if status == JobStatus.FINISHED and _status(redis, action_id) == "failed":
        kind, func, kwargs = _kind(redis, action_id), job.func_name, params if params is not None else job.kwargs
        job.delete()
        try:
            _enqueue_job(redis, action_id, func, kind=kind, params=kwargs, policy=policy or HttpPolicy())
        except DuplicateJobError:
            return False  # another requeue got there first
    elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        retry = retry_schedule(policy or HttpPolicy())
        job.retries_left = retry.max if retry else None
        job.retry_intervals = retry.intervals if retry else None
        if params is not None:
            _ = job.kwargs  # load the stored call first, so that only its kwargs change
            job.kwargs = params
        job.save()
        job.requeue()
    else:
        return False
    redis.hset(ACTION_PREFIX + action_id, mapping={"status": "queued", "updated_at": _now()})
    redis.zrem(FAILED_INDEX, action_id)
    redis.zadd(OPEN_INDEX, {action_id: time.time()})
    return True


def _status(redis: Redis, action_id: str) -> str | None:
    value = redis.hget(ACTION_PREFIX + action_id, "status")
    return value.decode() if value else None


def _kind(redis: Redis, action_id: str) -> str:
    value = redis.hget(ACTION_PREFIX + action_id, "kind")
    return value.decode() if value else "action"


def fail_later(redis: Redis, action_id: str, error: dict[str, Any]) -> None:
    """Record that an action whose job succeeded ended badly afterwards (a transcode task that
    failed, was deleted or timed out at the vendor): it is listed with the failed actions, with
    ``error`` (vendor, code, message), and a requeue or replay runs it again.

    Also for an action given up after its worker died: if it had recorded the intent of a call
    that is not idempotent (``INTENT_AT``), that call may have been made, so its outcome is unknown."""
    unknown = bool(redis.hexists(ACTION_PREFIX + action_id, INTENT_AT))
    _update(redis, action_id, status="failed", last_error=error, **({"outcome": OUTCOME_UNKNOWN} if unknown else {}))
    redis.zadd(FAILED_INDEX, {action_id: time.time()})


def _seconds(delay: float):
    from datetime import timedelta

    return timedelta(seconds=delay)


def _update(redis: Redis, action_id: str, pipe: Any = None, **fields: Any) -> None:
    """Write fields of an action record (and its place in the open index); with ``pipe``, into
    the caller's pipeline (sent with its other writes), else at once."""
    mapping = {k: (json.dumps(v) if isinstance(v, (dict, list)) else str(v)) for k, v in fields.items()}
    mapping["updated_at"] = _now()
    own = pipe is None
    if own:
        pipe = redis.pipeline(transaction=False)
    pipe.hset(ACTION_PREFIX + action_id, mapping=mapping)
    if "status" in fields:
        if fields["status"] in FINAL_STATUSES:
            pipe.zrem(OPEN_INDEX, action_id)
        else:
            pipe.zadd(OPEN_INDEX, {action_id: time.time()})
    if own:
        pipe.execute()


@contextmanager
def tracked(redis: Redis, action_id: str, action: Action | None = None) -> Iterator[dict[str, Any]]:
    """Run an action's body: mark it running, then succeeded / skipped / retrying / failed.

    The body may put a JSON-able result into the yielded dict (``out["result"] = ...``).
    ``action``: its kind's entry, when known (its vendor's pause is then checked in the same
    round trip as the "running" mark; else it is read from the record first).
    """
    job = get_current_job()
    # The kind and event id are read with the attempt count and the "running" mark, in one round
    # trip (the metrics' labels and the log lines' ids; the metrics write adds one at the end).
    # A paused vendor's action waits before it does anything (workers/vendor_control.py): the
    # pause is checked in the same round trip when the vendor is known.
    pipe = redis.pipeline()
    pipe.hincrby(ACTION_PREFIX + action_id, "attempts", 1)
    pipe.hset(ACTION_PREFIX + action_id, mapping={"status": "running", "updated_at": _now()})
    pipe.zadd(OPEN_INDEX, {action_id: time.time()})
    pipe.hmget(ACTION_PREFIX + action_id, "kind", "event_id")
    early = job is not None and action is not None
    if early:
        vendor_control.hold_in(pipe, action_id, action.vendor)
    replies = pipe.execute()
    kind, event_id = (v.decode() if v else None for v in replies[3])
    vendor = action.vendor if action is not None else vendor_of(kind)
    label = vendor or "other"  # the metrics' vendor label
    with logs.context(event_id=event_id, action_id=action_id):
        if (vendor_control.held(job, replies[4]) if early else
                vendor_control.hold_if_paused(redis, job, action_id, vendor)):
            log.info("action %s held: vendor %s is paused", action_id, vendor)
            _logged(job)
            raise vendor_control.Held(f"vendor {vendor} is paused")
        out: dict[str, Any] = {}
        # The outcome, the failed list and the metrics (the vendor calls' too): one round trip.
        pipe, own = _outcome_writes(redis)
        calls = http.metrics_pipe.set(pipe)
        try:
            yield out
        except Skip as reason:
            _update(redis, action_id, pipe, status="skipped", result={"skipped": str(reason)})
            counters.count_action(redis, kind, label, "skipped", pipe=pipe)
            if own:
                pipe.execute()
            log.info("action %s skipped: %s", action_id, reason)
            return
        except VendorError as exc:
            _fail(redis, job, action_id, exc.to_dict(), transient=exc.transient, retry_after=exc.retry_after,
                  kind=kind, vendor=label, reason=counters.retry_reason(exc),
                  outcome=OUTCOME_UNKNOWN if isinstance(exc, OutcomeUnknown) else None, pipe=pipe, own=own)
            # The vendor's answer is the whole story, logged above in one line: RQ's own ERROR
            # line with a traceback for it would be a second, misleading one (app/core/logs.py).
            _logged(job)
            raise
        except Exception as exc:
            # A bug or an unexpected reply: retried like a transient error, with the trace kept.
            error = {"vendor": None, "code": exc.__class__.__name__, "message": str(exc)[:500], "transient": True,
                     "trace": traceback.format_exc(limit=5)[-2000:]}
            _fail(redis, job, action_id, error, transient=True, retry_after=None, kind=kind, vendor=label,
                  reason=counters.retry_reason(exc), pipe=pipe, own=own)
            raise
        finally:
            http.metrics_pipe.reset(calls)
        _update(redis, action_id, pipe, status="succeeded", result=out.get("result", {}))
        pipe.zrem(FAILED_INDEX, action_id)
        counters.count_action(redis, kind, label, "succeeded", pipe=pipe)
        if own:
            pipe.execute()
        log.info("action %s succeeded", action_id)


def _outcome_writes(redis: Redis) -> tuple[Any, bool]:
    """(pipeline, whether the caller sends it) for an attempt's outcome: an attempt inside its
    event job writes it with its job's finish (``_attempt``), in one round trip."""
    pipe = _inline.get()
    return (pipe, False) if pipe is not None else (redis.pipeline(transaction=False), True)


def _logged(job: Job | None) -> None:
    """The exception about to leave the job body is logged already. Only RQ's worker logs it a
    second time (app/core/logs.py): an attempt run inside its event job is not RQ's to log."""
    if job is not None and _inline.get() is None:
        logs.handled(job.id)


@dataclass(frozen=True)
class Run:
    """What an action's body works with (see ``running``)."""

    redis: Redis
    settings: Settings
    cfg: Any  # the vendor's settings section (Transcoder, FlightHub, KooPhone, MetaStudioApi)
    out: dict[str, Any]  # put a JSON-able result in out["result"]

    def locked(self, name: str) -> AbstractContextManager[None]:
        """Hold ``mh:lock:<name>`` while the body runs (``workers.locks.locked``), waiting as long
        as a holder may need for two calls to this vendor, then ``locks.Busy`` (retried as any
        unexpected error: the next attempt finds the holder done)."""
        call = self.cfg.http.connect_timeout + self.cfg.http.read_timeout
        return locks.locked(self.redis, name, wait=2 * call + 10)


@contextmanager
def running(action_id: str, action: Action) -> Iterator[Run]:
    """The preamble of every action job: the job's Redis, ``tracked``, the settings, and the
    vendor's section or ``Skip`` (configured out since the action was queued)."""
    redis = context.redis()
    with tracked(redis, action_id, action) as out:
        settings = context.settings()
        cfg = getattr(settings, action.section)
        if cfg is None:
            raise Skip(f"{action.vendor} is not configured (no {action.section} section)")
        yield Run(redis, settings, cfg, out)


# --- the first attempt, inside the event job --------------------------------------------------
#
# An event job that queues actions runs their first attempt itself, right after deciding them:
# one RQ job per event instead of two, and no queue wait before the vendor call. Each action still
# has its own RQ job (saved, not pushed), so everything after the first attempt is as before: a
# retry or a hold is that job scheduled on RQ's Retry schedule, a permanent failure is that job
# failed (requeue and replay work on it), and a crash mid-attempt is found by the sweep (the record
# names its runner, ``RUN_BY``: live while that event job is, queued again once it is not).

RUN_BY = "run_by"  # action record field: the id of the event job running its first attempt


@dataclass
class FirstAttempts:
    """The actions queued by one event job, to be attempted by it."""

    job_id: str  # the event job's
    jobs: list[Job] = field(default_factory=list)


_batch: ContextVar[FirstAttempts | None] = ContextVar("mediahook_first_attempts", default=None)
# While an attempt runs inside its event job: the pipeline its outcome and its job's finish go out in.
_inline: ContextVar[Any] = ContextVar("mediahook_inline_attempt", default=None)


@contextmanager
def first_attempts_here() -> Iterator[FirstAttempts | None]:
    """Inside, ``enqueue`` keeps a new action's first attempt for this job (None outside a job:
    actions are queued as usual). Should the block fail, the kept ones are queued instead."""
    job = get_current_job()
    if job is None:
        yield None
        return
    batch = FirstAttempts(job.id)
    token = _batch.set(batch)
    try:
        yield batch
    except BaseException:
        _push(job.connection, batch.jobs)
        raise
    finally:
        _batch.reset(token)


def run_first_attempts(redis: Redis, batch: FirstAttempts | None) -> None:
    """Run the kept first attempts, in the order they were queued. After a timeout of the event
    job (its alarm has gone off: nothing bounds a further attempt) the rest are queued."""
    pending = list(batch.jobs) if batch else []
    queue = Queue(ACTIONS_QUEUE, connection=redis)
    while pending:
        job = pending.pop(0)
        try:
            timed_out = _attempt(redis, queue, job)
        except BaseException:  # the job process is going down (a cold stop): its successors go on
            _push(redis, pending)
            raise
        if timed_out:
            _push(redis, pending)
            return


def _push(redis: Redis, jobs: list[Job]) -> None:
    """Queue jobs kept for a first attempt here that will not get it (best effort: the sweep
    queues whatever this misses, once the event job is gone)."""
    if not jobs:
        return
    try:
        queue = Queue(ACTIONS_QUEUE, connection=redis)
        with redis.pipeline() as pipe:
            for job in jobs:
                queue.enqueue_job(job, pipeline=pipe)
                pipe.hdel(ACTION_PREFIX + job.meta.get("action_id", job.id), RUN_BY)
            pipe.execute()
    except Exception:
        log.exception("could not queue %d action(s) kept for the event job; the sweep will", len(jobs))


def _attempt(redis: Redis, queue: Queue, job: Job) -> bool:
    """One attempt of an action's job in this process, finished as RQ's worker finishes a job
    (succeeded; retried on its schedule or held; failed). True if the event job's time ran out."""
    action_id = job.meta.get("action_id", job.id)
    job.started_at = rq_now()
    pipe = redis.pipeline(transaction=False)
    token = _inline.set(pipe)
    try:
        result = job.perform()  # get_current_job() is the action's job inside (its retries, its hold)
    except Exception as exc:
        job.ended_at = rq_now()
        if not isinstance(exc, (VendorError, vendor_control.Held)):
            log.exception("action %s: exception raised while executing", action_id)  # as RQ's worker logs it
        with pipe:
            if job.should_retry:
                job.retry(queue, pipe)  # scheduled after its interval (or queued), as RQ's worker does
            else:
                exc_string = traceback.format_exc()
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                job.failed_job_registry.add(job, ttl=job.failure_ttl, exc_string=exc_string, pipeline=pipe)
                Result.create_failure(job, job.failure_ttl, exc_string=exc_string, pipeline=pipe)
            pipe.hdel(ACTION_PREFIX + action_id, RUN_BY)
            pipe.execute()
        return isinstance(exc, JobTimeoutException)
    finally:
        _inline.reset(token)
    job.ended_at = rq_now()
    with pipe:  # after the outcome tracked() wrote into it: one round trip
        job.set_status(JobStatus.FINISHED, pipeline=pipe)
        job.save(pipeline=pipe, include_meta=False, include_result=False)
        Result.create(job, Result.Type.SUCCESSFUL, ttl=ACTION_TTL, return_value=result,
                      pipeline=pipe)
        job.finished_job_registry.add(job, ACTION_TTL, pipe)
        job.cleanup(ACTION_TTL, pipeline=pipe, remove_from_queue=False)
        pipe.hdel(ACTION_PREFIX + action_id, RUN_BY)
        pipe.execute()
    return False


def _fail(redis: Redis, job: Job | None, action_id: str, error: dict, *, transient: bool,
          retry_after: float | None, kind: str | None, vendor: str, reason: str | None = None,
          outcome: str | None = None, pipe: Any, own: bool) -> None:
    will_retry = bool(transient and job is not None and job.retries_left and job.retries_left > 0)
    if job is not None and not transient:
        job.retries_left = 0  # permanent: RQ must not retry it
    if will_retry and retry_after and job is not None and job.retry_intervals:
        # Honour Retry-After: make the interval RQ is about to use at least that long. RQ
        # schedules in whole seconds (it truncates the due time), hence the extra second.
        index = max(len(job.retry_intervals) - job.retries_left, 0)
        intervals = list(job.retry_intervals)
        if index < len(intervals):
            intervals[index] = max(intervals[index], math.ceil(retry_after) + 1)
            job.retry_intervals = intervals
    _update(redis, action_id, pipe, status="retrying" if will_retry else "failed", last_error=error,
            **({"outcome": outcome} if outcome else {}))
    if not will_retry:
        pipe.zadd(FAILED_INDEX, {action_id: time.time()})
    counters.count_action(redis, kind, vendor, "retrying" if will_retry else "failed",
                          retry_reason=reason if will_retry else None, pipe=pipe)
    if own:
        pipe.execute()
    # One line per outcome: a retry is a WARNING, a failure for good an ERROR (it is listed).
    log.log(logging.WARNING if will_retry else logging.ERROR, "action %s %s: %s", action_id,
            "will retry" if will_retry else "FAILED", error.get("message"))

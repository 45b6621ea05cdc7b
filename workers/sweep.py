"""The sweep: work the records say is not done, but whose RQ job is nowhere, is queued again.

The event record (``mh:event:<id>``) and the action record (``mh:action:<id>``) are the truth;
RQ's lists and registries are how the work gets done. They can part: a worker listening on two
queues pops a job with BLPOP, which keeps no copy, so a job popped just before its worker (or
Redis) died is in no queue and no registry, and its event stays ``queued`` for good.

A job is **live** when it is in its queue (or RQ's intermediate list), in the started registry
(being run; an entry whose heartbeat lapsed is RQ's to retry or fail, and the sweep first lets
RQ do that), in the scheduled registry (a retry or a poll, due later) or in the deferred one.
The sweep looks at

- events still ``queued``, received more than ``GRACE_SECONDS`` ago: every pass those of the
  last ``RECENT_SECONDS`` (``mh:events`` by time), and once every ``FULL_EVERY_SECONDS`` the
  whole index (it only holds events within their retention);
- actions not final (``queued running retrying``) whose status is older than the grace, from
  ``actions.OPEN_INDEX``, a sorted set of exactly those, kept by ``workers/actions.py``. An
  action whose first attempt an event job runs (its record's ``run_by``) is live while that
  event job is: its own job is saved but in no queue until then.

What has no live job is checked again ``SETTLE_SECONDS`` later (a worker between its pop and
its start is in no list for a moment) and, if still neither done nor live, queued again under
its own job id with RQ's ``enqueue_job``: its retry budget, arguments and id are kept, and
events and actions are idempotent, so a second run has no second effect. A job RQ gave up
(failed, stopped, canceled) is not run again: an action whose record still says it is pending
is marked ``failed`` (listed by ``mediahook failed``); an event job is already listed there.
``mediahook_sweep_requeued_total{what}`` and ``mediahook_sweep_failed_total{what}`` count them.

Cost of a pass: one read of each queue's list and registries (O(jobs waiting), in one MULTI),
one HMGET per event of the last 10 min (per event within retention, hourly) and per open action,
in pipelines of ``BATCH``. A worker runs it in its maintenance pass, at most once per
``INTERVAL_SECONDS`` on the whole fleet; ``mediahook sweep`` runs it by hand.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from app.core import counters
from app.core.events import EVENT_JOB_RETRY, EVENT_PREFIX, EVENTS_INDEX, job_id_for
from app.core.queues import EVENTS_QUEUE, PROCESS_EVENT, QUEUES
from workers import actions
from workers.recovery import MAINTENANCE_LOCK_TTL

log = logging.getLogger(__name__)

# Nothing needs a long grace: the web side writes an event and its job in one script, and a
# worker between its pop and its start is covered by SETTLE_SECONDS. It only has to outlast an
# action's record being written just before its job.
GRACE_SECONDS = 5
INTERVAL_SECONDS = 10
SETTLE_SECONDS = 2.0
RECENT_SECONDS = 600
FULL_EVERY_SECONDS = 3600
BATCH = 500

LOCK_KEY = "mh:lock:sweep"  # held while one sweep runs
LAST_KEY = "mh:sweep:last"  # set by a worker's sweep for INTERVAL_SECONDS: the fleet sweeps once
FULL_KEY = "mh:sweep:full"  # set by a full pass for FULL_EVERY_SECONDS
LOCK_TTL = 300

# Drop index entries whose action is final or gone, checked in the script: a requeue between the
# sweep's read and its removal must keep its entry.
# KEYS: the index; ARGV: record prefix, k, k final statuses, action ids.
_DROP_DONE = """
local k = tonumber(ARGV[2])
local final = {}
for i = 3, 2 + k do final[ARGV[i]] = true end
local n = 0
for i = 3 + k, #ARGV do
  local status = redis.call('HGET', ARGV[1] .. ARGV[i], 'status')
  if not status or final[status] then n = n + redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return n
"""


def _pending_action(status: bytes | None) -> bool:
    return bool(status) and status.decode() not in actions.FINAL_STATUSES
GIVEN_UP = frozenset({JobStatus.FAILED.value, JobStatus.STOPPED.value, JobStatus.CANCELED.value})


@dataclass
class Report:
    """What one pass found and did (ids), and how much it read."""

    events_requeued: list[str] = field(default_factory=list)
    actions_requeued: list[str] = field(default_factory=list)
    actions_failed: list[str] = field(default_factory=list)
    events_checked: int = 0
    actions_checked: int = 0
    full: bool = False
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Suspect:
    what: str  # "event" | "action"
    id: str  # event id or action id
    job_id: str
    run_by: str | None = None  # an action: the event job running its first attempt (actions.RUN_BY)

    def live(self, live_ids: set[str]) -> bool:
        """Its own job is live, or the event job running it is."""
        return self.job_id in live_ids or (self.run_by is not None and self.run_by in live_ids)


def from_worker(redis: Redis) -> Report | None:
    """A worker's maintenance pass: sweep, unless a worker of the fleet did in the last
    ``INTERVAL_SECONDS`` or one is sweeping now."""
    if not redis.set(LAST_KEY, _me(), nx=True, ex=INTERVAL_SECONDS):
        return None
    lock = redis.lock(LOCK_KEY, timeout=LOCK_TTL, blocking=False)
    if not lock.acquire():
        return None
    try:
        report = sweep(redis)
    finally:
        _release(lock)
    if report.events_requeued or report.actions_requeued or report.actions_failed:
        log.warning("sweep: queued again %d event(s) %s and %d action(s) %s; marked failed %s",
                    len(report.events_requeued), report.events_requeued[:10], len(report.actions_requeued),
                    report.actions_requeued[:10], report.actions_failed[:10])
    return report


def by_hand(redis: Redis, *, full: bool = True, grace: float = GRACE_SECONDS, dry_run: bool = False,
            wait: float = 60.0) -> Report:
    """``mediahook sweep``: one pass now (waiting up to ``wait`` s for one that is running)."""
    lock = redis.lock(LOCK_KEY, timeout=LOCK_TTL, blocking_timeout=wait)
    if not lock.acquire():
        raise TimeoutError(f"another sweep held {LOCK_KEY} for more than {wait:.0f} s")
    try:
        return sweep(redis, full=full, grace=grace, dry_run=dry_run)
    finally:
        _release(lock)


def sweep(redis: Redis, *, full: bool | None = None, grace: float = GRACE_SECONDS, dry_run: bool = False,
          settle: float = SETTLE_SECONDS) -> Report:
    """One pass (see the module's docstring). ``full`` None: full once per ``FULL_EVERY_SECONDS``."""
    now = time.time()
    if full is None:
        full = bool(redis.set(FULL_KEY, _me(), nx=True, ex=FULL_EVERY_SECONDS))
    report = Report(full=full, dry_run=dry_run)
    if not dry_run:
        _let_rq_give_up_lapsed(redis)
    since = "-inf" if full else now - RECENT_SECONDS
    suspects = _suspects(redis, since, now - grace, report)
    if not suspects:
        return report
    time.sleep(settle)  # production wait, not a test's: lets a job between pop and start show up
    for suspect, job_status in _suspects_still(redis, suspects):
        what_to_do = _decide(suspect, job_status)
        if dry_run:
            {"requeue": report.events_requeued if suspect.what == "event" else report.actions_requeued,
             "fail": report.actions_failed}.get(what_to_do, []).append(suspect.id)
        elif what_to_do != "leave":
            _act(redis, suspect, job_status, what_to_do, report)
    if not dry_run:
        for what, ids in (("event", report.events_requeued), ("action", report.actions_requeued)):
            if ids:
                counters.count_sweep(redis, what, "requeued", len(ids))
        if report.actions_failed:
            counters.count_sweep(redis, "action", "failed", len(report.actions_failed))
    return report


# --- what is live in RQ -----------------------------------------------------------------------

def live_job_ids(redis: Redis) -> set[str]:
    """Every job id in a queue, RQ's intermediate list, or the started, scheduled or deferred
    registry of mediahook's queues, read in one MULTI (one consistent moment)."""
    pipe = redis.pipeline(transaction=True)
    for name in QUEUES:
        q = Queue(name, connection=redis)
        pipe.lrange(q.key, 0, -1)
        pipe.lrange(q.intermediate_queue_key, 0, -1)
        pipe.zrange(q.started_job_registry.key, 0, -1)  # "<job id>:<execution id>"
        pipe.zrange(q.scheduled_job_registry.key, 0, -1)
        pipe.zrange(q.deferred_job_registry.key, 0, -1)
    ids: set[str] = set()
    for members in pipe.execute():
        ids.update(m.decode().split(":", 1)[0] for m in members)
    return ids


def _let_rq_give_up_lapsed(redis: Redis) -> None:
    """RQ's own handling of started jobs whose heartbeat lapsed (retry, or fail when out of
    retries), under the queue's maintenance lock, as a worker's maintenance pass would."""
    for name in QUEUES:
        q = Queue(name, connection=redis)
        if redis.set(q.registry_cleaning_key, 1, nx=True, ex=MAINTENANCE_LOCK_TTL):
            try:
                q.started_job_registry.cleanup()
            finally:
                redis.delete(q.registry_cleaning_key)


# --- finding --------------------------------------------------------------------------------

def _batches(redis: Redis, key: str, low: float | str, high: float) -> Iterator[list[str]]:
    """Members of a sorted set scored ``low``..``high``, in batches, by a score cursor (members
    may be removed meanwhile, so no offsets)."""
    start: float | str = low
    seen: set[bytes] = set()  # members at the cursor's score, already yielded
    while True:
        rows = redis.zrangebyscore(key, start, high, start=0, num=BATCH, withscores=True)
        fresh = [m for m, _ in rows if m not in seen]
        if fresh:
            yield [m.decode() for m in fresh]
        if len(rows) < BATCH:
            return
        last = rows[-1][1]
        if rows[0][1] == last:  # a whole batch on one score (not seen in practice): step past it
            start, seen = f"({last!r}", set()
        else:
            start, seen = last, {m for m, score in rows if score == last}


def _suspects(redis: Redis, low: float | str, high: float, report: Report) -> list[_Suspect]:
    candidates: list[_Suspect] = []
    for ids in _batches(redis, EVENTS_INDEX, low, high):
        report.events_checked += len(ids)
        pipe = redis.pipeline(transaction=False)
        for event_id in ids:
            pipe.hmget(EVENT_PREFIX + event_id, "status", "job_id")
        for event_id, (status, job_id) in zip(ids, pipe.execute(), strict=True):
            if status == b"queued":
                candidates.append(_Suspect("event", event_id, job_id.decode() if job_id else job_id_for(event_id)))
    for ids in _batches(redis, actions.OPEN_INDEX, "-inf", high):
        report.actions_checked += len(ids)
        pipe = redis.pipeline(transaction=False)
        for action_id in ids:
            pipe.hmget(actions.ACTION_PREFIX + action_id, "status", actions.RUN_BY)
        stale = []
        for action_id, (status, run_by) in zip(ids, pipe.execute(), strict=True):
            if _pending_action(status):
                candidates.append(_Suspect("action", action_id, actions.job_id(action_id),
                                           run_by.decode() if run_by else None))
            else:
                stale.append(action_id)  # final, or the record expired
        if stale and not report.dry_run:
            finals = sorted(actions.FINAL_STATUSES)
            redis.eval(_DROP_DONE, 1, actions.OPEN_INDEX, actions.ACTION_PREFIX, len(finals), *finals, *stale)
    if not candidates:
        return []
    live = live_job_ids(redis)
    return [s for s in candidates if not s.live(live)]


def _suspects_still(redis: Redis, suspects: list[_Suspect]) -> list[tuple[_Suspect, str | None]]:
    """The suspects that, read again, are still pending and not live, with their job's status
    (None: the job hash is gone)."""
    pipe = redis.pipeline(transaction=False)
    for s in suspects:
        key = EVENT_PREFIX + s.id if s.what == "event" else actions.ACTION_PREFIX + s.id
        pipe.hmget(key, "status", actions.RUN_BY)
        pipe.hget(Job.key_for(s.job_id), "status")
    values = pipe.execute()
    live = live_job_ids(redis)
    still = []
    for n, s in enumerate(suspects):
        (status, run_by), job_status = values[2 * n], values[2 * n + 1]
        pending = status == b"queued" if s.what == "event" else _pending_action(status)
        if run_by:
            s = _Suspect(s.what, s.id, s.job_id, run_by.decode())
        if pending and not s.live(live):
            still.append((s, job_status.decode() if job_status else None))
    return still


# --- acting ---------------------------------------------------------------------------------

def _decide(suspect: _Suspect, job_status: str | None) -> str:
    """What to do with a suspect: requeue; fail (an action RQ gave up, or whose job is gone); or
    leave (an event job RQ gave up: listed by `mediahook failed` already, replayed by a person)."""
    if job_status in GIVEN_UP:
        return "leave" if suspect.what == "event" else "fail"
    if job_status is None and suspect.what == "action":
        return "fail"  # no job to put back, and the record's params have secrets masked
    return "requeue"


def _act(redis: Redis, suspect: _Suspect, job_status: str | None, what_to_do: str, report: Report) -> None:
    if suspect.what == "event":
        if not _requeue_job(redis, suspect.job_id):
            _recreate_event_job(redis, suspect.id, suspect.job_id)
        redis.hset(EVENT_PREFIX + suspect.id, "swept_at", repr(time.time()))
        report.events_requeued.append(suspect.id)
        return
    if what_to_do == "fail":
        # RQ gave the job up (a worker died with no retries left), or its hash is gone: the
        # action would otherwise say "running" for good. Listed and replayable, like any failure.
        why = ("its job is gone from Redis" if job_status is None else
               f"RQ gave its job up ({job_status}) without the action recording an outcome: its worker died")
        actions.fail_later(redis, suspect.id, {"vendor": None, "code": "JobLost", "message": why,
                                               "transient": False})
        report.actions_failed.append(suspect.id)
        return
    if _requeue_job(redis, suspect.job_id):
        now = repr(time.time())
        redis.hset(actions.ACTION_PREFIX + suspect.id, mapping={"status": "queued", "updated_at": now, "swept_at": now})
        redis.hdel(actions.ACTION_PREFIX + suspect.id, actions.RUN_BY)  # its event job is gone
        redis.zadd(actions.OPEN_INDEX, {suspect.id: time.time()})
        report.actions_requeued.append(suspect.id)


def _requeue_job(redis: Redis, job_id: str) -> bool:
    """Put an existing job back on its queue, as it is (same id, arguments, retries left)."""
    try:
        job = Job.fetch(job_id, connection=redis)
    except NoSuchJobError:
        return False
    Queue(job.origin or EVENTS_QUEUE, connection=redis).enqueue_job(job)
    return True


def _recreate_event_job(redis: Redis, event_id: str, job_id: str) -> None:
    """An event whose job hash is gone: a new one with the same id, as the web side makes it."""
    Queue(EVENTS_QUEUE, connection=redis).enqueue(PROCESS_EVENT, event_id, job_id=job_id, retry=EVENT_JOB_RETRY,
                                                  result_ttl=86400, description=f"process event {event_id}")


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _release(lock: Any) -> None:
    try:
        lock.release()
    except Exception:  # expired meanwhile (a very long pass): nothing to release
        pass

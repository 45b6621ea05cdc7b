"""Pause and resume one vendor at run time: its actions wait, none is lost, resume sends them in order.

State lives in Redis, so every worker on every host sees it at once:

- ``mh:vendor-paused:<vendor>`` (a JSON string: when, by whom, why) while the vendor is paused;
- ``mh:vendor-held:<vendor>`` (a list): the actions that came up while it was paused, in the
  order they came up (which is their queue order).

Where: an action job checks at its start (``workers.actions.tracked``), before it does anything,
so a held action has made no call and set no intent. A held action is taken off the workers: its
record says ``held``, its id goes on the vendor's list (once), and its RQ job is scheduled far
ahead (``HOLD_SECONDS``) by failing with ``Held`` and a one-off retry, its own retry budget put
aside in the job's meta. RQ's scheduled registry keeps it like any retry: the sweep counts it
live, and nothing lists it as failed. ``resume`` clears the pause and takes the list in one
script, then puts each job back on its queue in list order, its retry budget restored.

An action already running when a pause comes finishes; a pause holds what starts after it. If a
held job's time comes before a resume (``HOLD_SECONDS``, a backstop should the list be lost), it
looks again: still paused, it is held again in the same place; else it runs.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from workers.clients import flighthub, koophone, metastudio, muducloud

log = logging.getLogger(__name__)

# Every vendor we call (one client module each): its name, and the Settings section that sets its rate limit.
CLIENTS = (muducloud, flighthub, koophone, metastudio)
VENDORS = tuple(client.VENDOR for client in CLIENTS)
SECTIONS = {client.VENDOR: client.SECTION for client in CLIENTS}

PAUSED_PREFIX = "mh:vendor-paused:"
HELD_PREFIX = "mh:vendor-held:"
HELD = "held"  # the action record's status while it waits
HOLD_SECONDS = 3600
HELD_META = "mediahook_held_retry"  # job meta: [retries_left, retry_intervals] put aside while held


class Held(Exception):
    """Raised at an action's start when its vendor is paused: RQ schedules the job far ahead
    (see the module docstring); not an error, and logged as one line at INFO."""


class UnknownVendor(ValueError):
    pass


def check(vendor: str) -> str:
    if vendor not in VENDORS:
        raise UnknownVendor(f"unknown vendor {vendor!r}: one of {', '.join(VENDORS)}")
    return vendor


# KEYS: paused flag, held list, action record; ARGV: action id, now. 1 = held (listed once).
_HOLD = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if not redis.call('LPOS', KEYS[2], ARGV[1]) then
  redis.call('RPUSH', KEYS[2], ARGV[1])
end
redis.call('HINCRBY', KEYS[3], 'attempts', -1)  -- a hold is not an attempt
redis.call('HSET', KEYS[3], 'status', 'held', 'held_at', ARGV[2], 'updated_at', ARGV[2])
return 1
"""

# KEYS: paused flag, held list. Clears the pause and takes the list, in one step: an action that
# starts after this runs; one held before it is in the list taken.
_RESUME = """
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[1], KEYS[2])
return ids
"""


def hold_if_paused(redis: Redis, job: Job | None, action_id: str, vendor: str | None) -> bool:
    """At an action's start: if its vendor (None: an action of no known vendor) is paused, hold
    it and return True (the caller raises ``Held``). Outside an RQ job nothing can be held: False."""
    if job is None:
        return False
    if vendor is None:
        return held(job, 0)
    return held(job, redis.eval(*_hold_args(action_id, vendor)))


def hold_in(pipe: Any, action_id: str, vendor: str) -> None:
    """``hold_if_paused``'s Redis step, added to the caller's pipeline (its reply goes to ``held``)."""
    pipe.eval(*_hold_args(action_id, vendor))


def _hold_args(action_id: str, vendor: str) -> tuple:
    return _HOLD, 3, PAUSED_PREFIX + vendor, HELD_PREFIX + vendor, _action_key(action_id), action_id, repr(time.time())


def held(job: Job, reply: Any) -> bool:
    """The job's side of a hold, after the Redis step replied (1: held): True if held."""
    if not reply:
        _restore_retries(job)
        return False
    if HELD_META not in job.meta:
        job.meta[HELD_META] = [job.retries_left, job.retry_intervals]
    # One retry, HOLD_SECONDS away: RQ's failure handling puts the job in its scheduled registry.
    job.retries_left, job.retry_intervals = 1, [HOLD_SECONDS]
    job.save_meta()
    return True


def _restore_retries(job: Job) -> None:
    """A job that was held and runs now gets its own retry budget back."""
    kept = job.meta.pop(HELD_META, None)
    if kept is not None:
        job.retries_left, job.retry_intervals = kept
        job.save()


def pause(redis: Redis, vendor: str, *, by: str | None = None, reason: str | None = None,
          settings: Any = None) -> dict[str, Any]:
    check(vendor)
    doc = {"at": time.time(), "by": by, "reason": reason}
    redis.set(PAUSED_PREFIX + vendor, json.dumps(doc), nx=True)  # a second pause keeps the first's time
    log.warning("vendor %s paused%s", vendor, f" by {by}" if by else "")
    return status(redis, vendor, settings)


def resume(redis: Redis, vendor: str, *, settle: float = 10.0, settings: Any = None) -> dict[str, Any]:
    """Clear the pause and put the held actions back on their queue, in the order they were held.
    Returns the vendor's status plus ``released`` (action ids, in order)."""
    from workers import actions

    check(vendor)
    ids = [i.decode() for i in redis.eval(_RESUME, 2, PAUSED_PREFIX + vendor, HELD_PREFIX + vendor)]
    released = []
    for action_id in ids:
        job = _parked_job(redis, actions.job_id(action_id), settle)
        if job is None:
            continue
        _restore_retries(job)
        queue = Queue(job.origin, connection=redis)
        queue.scheduled_job_registry.remove(job)
        queue.enqueue_job(job)
        pipe = redis.pipeline(transaction=False)
        pipe.hset(_action_key(action_id), mapping={"status": "queued", "updated_at": repr(time.time())})
        pipe.zadd(actions.OPEN_INDEX, {action_id: time.time()})
        pipe.execute()
        released.append(action_id)
    log.warning("vendor %s resumed: %d held action(s) queued again in order", vendor, len(released))
    return {**status(redis, vendor, settings), "released": released}


def _parked_job(redis: Redis, job_id: str, settle: float) -> Job | None:
    """The held job once RQ has scheduled it (a held job may be a few ms from that when the
    resume comes); None if it is gone or already back in play (run, queued, finished)."""
    deadline = time.monotonic() + settle
    while True:
        try:
            job = Job.fetch(job_id, connection=redis)
        except NoSuchJobError:
            return None
        state = job.get_status()
        if state == JobStatus.SCHEDULED:
            return job
        if state != JobStatus.STARTED or time.monotonic() > deadline:
            return None
        time.sleep(0.01)  # RQ is finishing the hold of this job (milliseconds)


def rate_limit(settings: Any, vendor: str) -> float:
    """The vendor's configured calls per second (0: none, or the vendor is not configured)."""
    section = getattr(settings, SECTIONS[vendor], None) if settings is not None else None
    return section.http.rate_limit_per_second if section is not None else 0.0


def status(redis: Redis, vendor: str | None = None, settings: Any = None) -> dict[str, Any] | list[dict[str, Any]]:
    """``{"vendor", "paused", "paused_at", "paused_by", "reason", "held", "rate_limit_per_second"}``
    for one vendor, or a list for all."""
    names = [check(vendor)] if vendor else list(VENDORS)
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.get(PAUSED_PREFIX + name)
        pipe.llen(HELD_PREFIX + name)
    values = pipe.execute()
    out = []
    for n, name in enumerate(names):
        raw, held = values[2 * n], values[2 * n + 1]
        doc = json.loads(raw) if raw else {}
        out.append({"vendor": name, "paused": raw is not None, "paused_at": doc.get("at"),
                    "paused_by": doc.get("by"), "reason": doc.get("reason"), "held": int(held),
                    "rate_limit_per_second": rate_limit(settings, name)})
    return out[0] if vendor else out


def _action_key(action_id: str) -> str:
    from workers.actions import ACTION_PREFIX

    return ACTION_PREFIX + action_id

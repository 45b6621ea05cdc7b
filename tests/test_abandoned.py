"""A worker that dies (SIGKILL: worker, work horse and scheduler) leaves a job half run and its
scheduler lock held. With RQ's defaults its action resumed after ~7 minutes on an idle worker
and due retries and polls stopped for ~90 s. `mediahook worker` bounds both under a minute
(workers/recovery.py); these tests kill real worker processes and wait, with no fast-forward."""

from __future__ import annotations

import time

import pytest
from rq import SimpleWorker, Worker
from rq.job import Job
from rq.scheduler import RQScheduler

from app.core.config import build
from app.core.queues import QUEUES
from app.core.vendor_config import HttpPolicy
from tests.conftest import _merge, vendor_sections
from tests.helpers import wait_until
from tests.vendor_harness import Workers, set_faults, sim_calls
from workers import actions, ops, recovery, sweep

RESUME_WITHIN = 60


@pytest.fixture
def workers(base_config, tmp_path):
    started = Workers(base_config, tmp_path)
    yield started
    started.stop_all()


def test_default_timings_resume_an_abandoned_job_within_a_minute():
    """The sum of RQ's timings as `mediahook worker` sets them, worst case, with the vendors'
    default first retry (5 s + 20 % jitter): under 60 s. With RQ's defaults it was ~7 min."""
    first_retry = HttpPolicy().retry_base_seconds * 1.2
    assert recovery.resume_bound(first_retry) <= RESUME_WITHIN
    # An idle worker looks at the clock more often than its maintenance is due.
    assert recovery.dequeue_timeout() < recovery.MAINTENANCE_INTERVAL
    assert recovery.SCHEDULER_LOCK_TTL + recovery.MAINTENANCE_INTERVAL + recovery.dequeue_timeout() < RESUME_WITHIN
    assert sweep.INTERVAL_SECONDS <= 30


def test_worker_built_with_the_bounded_timings(redis_client):
    worker = recovery.make_worker(Worker, list(QUEUES), redis_client)
    assert worker.maintenance_interval == recovery.MAINTENANCE_INTERVAL
    assert worker.dequeue_timeout == recovery.dequeue_timeout() < worker.maintenance_interval
    job = Job.create("workers.video_settings.apply", connection=redis_client, timeout=300)
    assert worker.get_heartbeat_ttl(job) == recovery.JOB_MONITORING_INTERVAL + recovery.HEARTBEAT_GRACE
    assert worker.get_heartbeat_ttl(job, working_time=298.5) == 1 + recovery.HEARTBEAT_GRACE
    # A SimpleWorker runs the job in its own process and cannot beat meanwhile: RQ's TTL stays.
    simple = recovery.make_worker(SimpleWorker, list(QUEUES), redis_client)
    assert simple.get_heartbeat_ttl(job) == SimpleWorker(list(QUEUES), connection=redis_client).get_heartbeat_ttl(job)


def scheduler_locks(redis) -> dict[str, tuple[bytes | None, int]]:
    return {q: (redis.get(RQScheduler.get_locking_key(q)), redis.ttl(RQScheduler.get_locking_key(q))) for q in QUEUES}


def test_killed_worker_and_scheduler_resume_within_a_minute(base_config, sim, redis_client, workers):
    """Worker 1 runs a KooPhone call (slow at the vendor) and holds the scheduler lock; worker 2
    is up and idle; worker 1 is SIGKILLed with its horse and scheduler. The half-run action must
    run again, and a job scheduled for later must still be moved to its queue, within a minute."""
    sections = vendor_sections(sim.url)
    sections["koophone"]["read_timeout"] = 30.0
    settings = build(_merge(base_config, sections), env={})
    set_faults(sim.url, {"koophone": {"latency_ms": 20000}})
    first = workers.start(redis_client, **sections)
    wait_until(lambda: all(owner for owner, _ in scheduler_locks(redis_client).values()), timeout=20,
               what="worker 1's scheduler to take the locks")
    old_owner = scheduler_locks(redis_client)[QUEUES[0]][0]
    # The lock lapses soon after its holder's last beat (RQ: 61 s).
    assert all(0 < ttl <= recovery.SCHEDULER_LOCK_TTL for _, ttl in scheduler_locks(redis_client).values())

    [killed] = ops.koophone_apply(redis_client, settings, "low", ["phone-k"])
    wait_until(lambda: any(c["pending"] for c in sim_calls(sim.url, "koophone")), timeout=20,
               what="the KooPhone call to be in flight")
    later = "koophone-manual-later-0"
    actions.enqueue(redis_client, later, actions.VIDEO_SETTINGS_APPLY, event_id=None,
                    policy=settings.koophone.http, delay=25,
                    params={"action_id": later, "profile": "normal", "instance_ids": ["phone-l"]})
    workers.start(redis_client, **sections)  # idle: nothing is queued

    first.kill()
    died = time.monotonic()
    assert actions.record(redis_client, killed)["status"] == "running"
    set_faults(sim.url, {})

    def done(action_id: str) -> bool:
        return (actions.record(redis_client, action_id) or {}).get("status") == "succeeded"

    wait_until(lambda: done(killed), timeout=RESUME_WITHIN + 5, interval=0.2,
               what="the killed worker's action to run again")
    resumed_after = time.monotonic() - died
    wait_until(lambda: done(later), timeout=RESUME_WITHIN + 5 - (time.monotonic() - died), interval=0.2,
               what="the job scheduled for later to run, its scheduler having died")
    assert resumed_after <= RESUME_WITHIN + 5
    assert actions.record(redis_client, killed)["attempts"] == 2
    assert actions.record(redis_client, later)["attempts"] == 1
    new_owner = scheduler_locks(redis_client)[QUEUES[0]][0]
    assert new_owner and new_owner != old_owner  # worker 2's scheduler took over


def test_scheduler_locks_lapse_soon_and_a_live_scheduler_takes_over_a_dead_ones_queue(redis_client):
    """RQ's lock lives 61 s and a scheduler holding some queues retries the others every 2 min;
    here a lock lapses SCHEDULER_LOCK_TTL after its last beat, and the retry comes as often."""
    from datetime import timedelta

    events, actions_queue = QUEUES
    dead = RQScheduler.get_locking_key(actions_queue)
    redis_client.set(dead, "a-scheduler-that-died", ex=61)  # what RQ's own scheduler leaves
    scheduler = recovery.BoundedLockScheduler(list(QUEUES), connection=redis_client)
    assert scheduler.acquire_locks() == {events}
    assert 0 < redis_client.ttl(RQScheduler.get_locking_key(events)) <= recovery.SCHEDULER_LOCK_TTL
    scheduler.heartbeat()
    assert 0 < redis_client.ttl(RQScheduler.get_locking_key(events)) <= recovery.SCHEDULER_LOCK_TTL
    assert redis_client.ttl(dead) > recovery.SCHEDULER_LOCK_TTL  # another's lock: never shortened
    assert not scheduler.should_reacquire_locks

    redis_client.delete(dead)  # the dead one's lock lapsed
    scheduler.lock_acquisition_time -= timedelta(seconds=recovery.SCHEDULER_LOCK_TTL + 1)
    assert scheduler.should_reacquire_locks
    assert scheduler.acquire_locks() == set(QUEUES)
    assert redis_client.get(dead) == scheduler.name.encode()
    scheduler.release_locks()

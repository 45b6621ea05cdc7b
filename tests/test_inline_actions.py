"""An action's first attempt runs inside the event job that queued it (one RQ job per event), and
everything after it is as before: a retry or a hold is the action's own RQ job on its schedule, a
permanent failure fails that job (a requeue runs it again), the vendor's rate limit holds, and a
worker killed mid-attempt neither loses the action nor runs it twice while the event job lives.

Only the events queue is worked in most tests here: what the actions queue never saw was run by
the event job."""

from __future__ import annotations

import json
import time

import pytest
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus

from app.core.events import job_id_for
from app.core.queues import ACTIONS_QUEUE, EVENTS_QUEUE, FAILED_INDEX
from tests.conftest import FAST_HTTP, ROOM, vendor_sections
from tests.helpers import wait_until
from tests.vendor_harness import Workers, post_live, set_faults, sim_calls, stream_event
from workers import actions, context, sweep, vendor_control


def reconcile_id(event_id: str) -> str:
    return f"converter-room-{ROOM}-{event_id}"


def record(redis, action_id: str) -> dict:
    return actions.record(redis, action_id) or {}


def work_events(redis) -> None:
    """Run what is on the events queue, in this process; the actions queue is left alone."""
    SimpleWorker([Queue(EVENTS_QUEUE, connection=redis)], connection=redis).work(burst=True, with_scheduler=False)


def puts(sim_url: str) -> list[dict]:
    return sim_calls(sim_url, "flighthub", "update")


def flighthub_only(sim_url: str, **http) -> dict:
    return {"flighthub": {**vendor_sections(sim_url)["flighthub"], **http}}


def test_the_event_job_makes_the_first_attempt_itself(make_app, sim, redis_client):
    client = make_app(**flighthub_only(sim.url)).test_client()
    event_id = post_live(client, stream_event(ROOM, "CONNECTED"))
    work_events(redis_client)

    action_id = reconcile_id(event_id)
    doc = record(redis_client, action_id)
    assert doc["status"] == "succeeded" and doc["attempts"] == 1 and actions.RUN_BY not in doc
    assert len(puts(sim.url)) == 1
    # Its own RQ job exists, finished, and never went through the actions queue.
    job = Job.fetch(actions.job_id(action_id), connection=redis_client)
    queue = Queue(ACTIONS_QUEUE, connection=redis_client)
    assert job.get_status() == JobStatus.FINISHED and job.id in queue.finished_job_registry
    assert queue.count == 0 and redis_client.zscore(actions.OPEN_INDEX, action_id) is None
    assert redis_client.hget(f"mh:event:{event_id}", "status") == b"processed"
    # A second delivery of the same plan (a replay of the event job) does not run it again.
    Queue(EVENTS_QUEUE, connection=redis_client).enqueue_job(Job.fetch(job_id_for(event_id), connection=redis_client))
    work_events(redis_client)
    assert record(redis_client, action_id)["attempts"] == 1 and len(puts(sim.url)) == 1


def test_a_transient_failure_is_retried_by_the_actions_own_job_on_its_schedule(make_app, sim, redis_client, drive):
    sections = flighthub_only(sim.url, retry_base_seconds=30, retry_max_seconds=30)
    client = make_app(**sections).test_client()
    set_faults(sim.url, {"flighthub": {"update": {"error_times": 1, "error_status": 500}}})
    event_id = post_live(client, stream_event(ROOM, "CONNECTED"))
    before = time.time()
    work_events(redis_client)

    action_id = reconcile_id(event_id)
    doc = record(redis_client, action_id)
    assert doc["status"] == "retrying" and doc["attempts"] == 1 and doc["last_error"]["status"] == 500
    job = Job.fetch(actions.job_id(action_id), connection=redis_client)
    queue = Queue(ACTIONS_QUEUE, connection=redis_client)
    assert job.get_status() == JobStatus.SCHEDULED
    assert job.retries_left == FAST_HTTP["retry_attempts"] - 1
    due = queue.scheduled_job_registry.get_scheduled_time(job)
    assert before + 30 * 0.8 - 1 <= due.timestamp() <= time.time() + 30 * 1.2 + 1  # its first interval, jittered
    assert actions.RUN_BY not in doc

    # Due now: the retry is the action's own job, run from the actions queue.
    queue.scheduled_job_registry.schedule(job, due.replace(year=2000))
    drive(lambda: record(redis_client, action_id).get("status") == "succeeded", what="the retry")
    assert record(redis_client, action_id)["attempts"] == 2 and len(puts(sim.url)) == 2


def test_a_permanent_failure_fails_the_job_and_a_requeue_runs_it_again(make_app, sim, redis_client, drive):
    settings_sections = flighthub_only(sim.url)
    client = make_app(**settings_sections).test_client()
    set_faults(sim.url, {"flighthub": {"update": {"vendor_errors": [
        {"times": 1, "code": 210001, "message": "bad parameter"}]}}})
    event_id = post_live(client, stream_event(ROOM, "CONNECTED"))
    work_events(redis_client)

    action_id = reconcile_id(event_id)
    doc = record(redis_client, action_id)
    assert doc["status"] == "failed" and doc["last_error"]["code"] == 210001
    assert redis_client.zscore(FAILED_INDEX, action_id) is not None
    job = Job.fetch(actions.job_id(action_id), connection=redis_client)
    assert job.get_status() == JobStatus.FAILED
    assert job.id in Queue(ACTIONS_QUEUE, connection=redis_client).failed_job_registry

    assert actions.requeue(redis_client, action_id)
    drive(lambda: record(redis_client, action_id).get("status") == "succeeded", what="the requeued action")
    assert record(redis_client, action_id)["attempts"] == 2


def test_a_paused_vendor_holds_the_first_attempt_and_resume_releases_it(make_app, sim, redis_client, drive):
    client = make_app(**flighthub_only(sim.url)).test_client()
    vendor_control.pause(redis_client, "flighthub", by="test")
    first = post_live(client, stream_event(ROOM, "CONNECTED"))
    second = post_live(client, stream_event(ROOM, "END"))
    work_events(redis_client)

    held = [reconcile_id(first), reconcile_id(second)]
    for action_id in held:
        doc = record(redis_client, action_id)
        assert doc["status"] == vendor_control.HELD and doc["attempts"] == 0
        job = Job.fetch(actions.job_id(action_id), connection=redis_client)
        assert job.get_status() == JobStatus.SCHEDULED
    assert [i.decode() for i in redis_client.lrange(vendor_control.HELD_PREFIX + "flighthub", 0, -1)] == held
    assert puts(sim.url) == []

    assert vendor_control.resume(redis_client, "flighthub")["released"] == held
    drive(lambda: all(record(redis_client, a).get("status") in ("succeeded", "skipped") for a in held),
          what="the released actions")
    assert [record(redis_client, a)["attempts"] for a in held] == [1, 1]


def test_the_rate_limit_holds_for_first_attempts(make_app, sim, redis_client):
    client = make_app(**flighthub_only(sim.url, rate_limit_per_second=4)).test_client()
    for n, state in enumerate(("CONNECTED", "END", "CONNECTED")):
        post_live(client, stream_event(ROOM, state, job_id=f"job-{n}"))
    work_events(redis_client)
    times = [c["time"] for c in puts(sim.url)]
    assert len(times) == 3
    # 4 calls a second at most: slots 0.25 s apart (a little slack for the clocks' reading).
    assert all(b - a >= 0.2 for a, b in zip(times, times[1:], strict=False)), times


@pytest.fixture
def workers(base_config, tmp_path):
    started = Workers(base_config, tmp_path)
    yield started
    started.stop_all()


def test_a_worker_killed_mid_attempt_runs_it_again_once_the_event_job_is_gone(make_app, sim, redis_client, workers):
    sections = flighthub_only(sim.url, read_timeout=30.0)
    client = make_app(**sections).test_client()
    set_faults(sim.url, {"flighthub": {"update": {"latency_ms": 20000}}})
    first = workers.start(redis_client, **sections)
    event_id = post_live(client, stream_event(ROOM, "CONNECTED"))
    action_id = reconcile_id(event_id)
    wait_until(lambda: any(c.get("pending") for c in puts(sim.url)), timeout=30, what="the PUT to be in flight")

    doc = record(redis_client, action_id)
    assert doc["status"] == "running" and doc[actions.RUN_BY] == job_id_for(event_id)
    assert actions.job_id(action_id) not in sweep.live_job_ids(redis_client)  # its own job is in no queue
    # While the event job runs it, a sweep leaves it alone: it is not run a second time.
    report = sweep.sweep(redis_client, full=True, grace=0, settle=0)
    assert action_id not in report.actions_requeued and action_id not in report.actions_failed
    assert Queue(ACTIONS_QUEUE, connection=redis_client).count == 0

    first.kill()
    set_faults(sim.url, {})
    workers.start(redis_client, **sections)
    wait_until(lambda: record(redis_client, action_id).get("status") == "succeeded", timeout=120, interval=0.2,
               what="the action to run again after its worker died")
    doc = record(redis_client, action_id)
    assert doc["attempts"] == 2 and actions.RUN_BY not in doc
    assert len(puts(sim.url)) == 2  # the killed one and the one after


def test_log_lines_of_a_first_attempt_carry_the_action_id(base_config, make_app, sim, redis_client, start_worker):
    sections = flighthub_only(sim.url)
    client = make_app(**sections).test_client()
    set_faults(sim.url, {"flighthub": {"update": {"vendor_errors": [
        {"times": 1, "code": 210001, "message": "bad parameter"}]}}})
    worker = start_worker(sections)
    refused = reconcile_id(post_live(client, stream_event(ROOM, "CONNECTED")))
    wait_until(lambda: record(redis_client, refused).get("status") == "failed", timeout=30, what="the refusal")
    done = reconcile_id(post_live(client, stream_event(ROOM, "END")))
    wait_until(lambda: record(redis_client, done).get("status") == "succeeded", timeout=30, what="the success")
    worker.stop()
    lines = [json.loads(line) for line in worker.log.read_text().splitlines() if line.startswith("{")]

    about_refused = [d for d in lines if d.get("action_id") == refused]
    assert [(d["level"], d["logger"]) for d in about_refused] == [("ERROR", "workers.actions")], about_refused
    assert "FAILED" in about_refused[0]["message"] and "exc" not in about_refused[0]
    about_done = [d for d in lines if d.get("action_id") == done]
    assert [(d["level"], d["message"]) for d in about_done] == [("INFO", f"action {done} succeeded")]
    assert all(d.get("event_id") for d in about_refused + about_done)
    assert "Traceback" not in worker.log.read_text()


def decide_then_fail(action_id: str) -> None:
    """An event job whose deciding fails after it kept an action's first attempt."""
    with actions.first_attempts_here():
        actions.enqueue(context.redis(), action_id, actions.CONVERTER_RECONCILE, event_id="evt-decide-fails",
                        policy=None, params={"action_id": action_id, "binding": f"room-{ROOM}"})
        raise RuntimeError("deciding failed")


def test_first_attempts_kept_by_an_event_job_that_then_fails_are_queued(make_app, sim, redis_client, drive):
    make_app(**flighthub_only(sim.url))
    action_id = "converter-kept-then-failed"
    Queue(EVENTS_QUEUE, connection=redis_client).enqueue(f"{__name__}.decide_then_fail", action_id)
    work_events(redis_client)

    assert actions.job_id(action_id) in Queue(ACTIONS_QUEUE, connection=redis_client).job_ids
    doc = record(redis_client, action_id)
    assert doc["status"] == "queued" and doc["attempts"] == 0 and actions.RUN_BY not in doc
    drive(lambda: record(redis_client, action_id).get("status") in actions.FINAL_STATUSES, what="the action")
    assert record(redis_client, action_id)["attempts"] == 1


def test_after_the_event_jobs_timeout_the_attempt_is_retried_and_the_rest_queued(make_app, sim, redis_client, drive):
    sections = vendor_sections(sim.url)
    sections["flighthub"]["read_timeout"] = 5.0
    client = make_app(job_timeout_seconds=1, flighthub=sections["flighthub"],
                      koophone=sections["koophone"]).test_client()
    set_faults(sim.url, {"flighthub": {"update": {"latency_ms": 2500}}})
    event_id = post_live(client, stream_event(ROOM, "CONNECTED"))
    work_events(redis_client)  # the reconcile's PUT outlasts the event job's 1 s: its alarm goes off

    converter, phones = reconcile_id(event_id), f"koophone-{event_id}-0-0"
    assert redis_client.hget(f"mh:event:{event_id}", "status") == b"processed"
    doc = record(redis_client, converter)
    assert doc["status"] == "retrying" and doc["last_error"]["code"] == "JobTimeoutException"
    # The KooPhone apply was not attempted after the alarm (nothing would bound it): it is queued.
    queued = Queue(ACTIONS_QUEUE, connection=redis_client).job_ids
    assert actions.job_id(phones) in queued and record(redis_client, phones)["attempts"] == 0
    assert actions.job_id(converter) in queued  # its retry (an interval of 0 s: queued at once)

    set_faults(sim.url, {})
    drive(lambda: all(record(redis_client, a).get("status") == "succeeded" for a in (converter, phones)),
          what="the retried reconcile and the queued apply")

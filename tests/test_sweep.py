"""The sweep (workers/sweep.py): the event and action records are the truth. What they say is not
done but whose RQ job is in no queue and no registry (popped by a worker that then died, with
Redis or on its own) is queued again under its own job id, once, and counted on /metrics; a
job that is live (queued, started with a heartbeat, scheduled) is never touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from app.core.queues import ACTIONS_QUEUE, EVENTS_QUEUE
from tests.conftest import ROOT, vendor_sections
from tests.helpers import to_toml, wait_until
from tests.test_metrics import get_metrics, total
from tests.vendor_harness import UPLOAD, Workers, set_faults, sim_calls, sim_tasks, upload_body
from workers import actions, ops, sweep, transcode

SETTLE = 0.2  # the production pass waits 2 s before it acts on a suspect; not needed here


def run_sweep(redis, **kw):
    return sweep.sweep(redis, grace=0, settle=SETTLE, **kw)


def queue(redis, name: str) -> Queue:
    return Queue(name, connection=redis)


def one_task_per_rung(sim_url: str, redis, video: str) -> bool:
    rungs = transcode.video_transcodes(redis, video)
    return bool(rungs) and all(r.get("state") == "success" for r in rungs.values()) \
        and len(sim_tasks(sim_url)) == len(rungs)


@pytest.fixture
def workers(base_config, tmp_path):
    started = Workers(base_config, tmp_path)
    yield started
    started.stop_all()


@pytest.mark.parametrize("lost", ["popped", "job hash gone"])
def test_event_whose_job_was_lost_is_queued_again_and_processed_once(lost, vendor_app, sim, drive, redis_client):
    client = vendor_app.test_client()
    event_id = client.post(UPLOAD, data=upload_body(("VSWEPT", 480))).json["event_id"]
    job_id = f"event-{event_id}"
    # A worker popped it (BLPOP keeps no copy) and died before it was started: no queue, no registry.
    assert redis_client.lpop(queue(redis_client, EVENTS_QUEUE).key) == job_id.encode()
    if lost == "job hash gone":
        redis_client.delete(Job.key_for(job_id))
    assert redis_client.hget(f"mh:event:{event_id}", "status") == b"queued"

    report = run_sweep(redis_client)
    assert report.events_requeued == [event_id] and not report.actions_requeued
    assert queue(redis_client, EVENTS_QUEUE).get_job_ids() == [job_id]  # its own id, once
    assert run_sweep(redis_client).events_requeued == []  # now live: a second pass leaves it

    drive(lambda: one_task_per_rung(sim.url, redis_client, "VSWEPT"), what="the swept event's transcodes")
    assert redis_client.hget(f"mh:event:{event_id}", "status") == b"processed"
    rungs = transcode.video_transcodes(redis_client, "VSWEPT")
    assert len(sim_calls(sim.url, "muducloud", "create-transcode")) == len(rungs)  # each rung created once
    assert total(get_metrics(client), "mediahook_sweep_requeued_total", what="event") == 1
    assert run_sweep(redis_client).events_requeued == []


def test_action_left_running_with_no_job_is_resumed(vendor_app, sim, drive, redis_client):
    [action_id] = ops.koophone_apply(redis_client, _worker_settings(), "low", ["phone-r"])
    job_id = actions.job_id(action_id)
    # Popped, started, then its worker died before it was in the started registry.
    assert redis_client.lpop(queue(redis_client, ACTIONS_QUEUE).key) == job_id.encode()
    Job.fetch(job_id, connection=redis_client).set_status(JobStatus.STARTED)
    redis_client.hset(actions.ACTION_PREFIX + action_id, "status", "running")

    report = run_sweep(redis_client)
    assert report.actions_requeued == [action_id] and not report.events_requeued
    assert actions.record(redis_client, action_id)["status"] == "queued"
    assert queue(redis_client, ACTIONS_QUEUE).get_job_ids() == [job_id]

    drive(lambda: actions.record(redis_client, action_id)["status"] == "succeeded", what="the swept action")
    assert len(sim_calls(sim.url, "koophone")) == 1
    assert redis_client.zscore(actions.OPEN_INDEX, action_id) is None  # final: out of the open index
    assert total(get_metrics(vendor_app.test_client()), "mediahook_sweep_requeued_total", what="action") == 1


def test_action_whose_job_rq_gave_up_is_marked_failed_not_left_running(vendor_app, redis_client):
    """A worker died mid-action with no retries left: RQ fails the job, but the action record
    would say "running" for good. The sweep lets RQ give it up, then lists it as failed."""
    [action_id] = ops.koophone_apply(redis_client, _worker_settings(), "low", ["phone-g"])
    job_id = actions.job_id(action_id)
    actions_queue = queue(redis_client, ACTIONS_QUEUE)
    assert redis_client.lpop(actions_queue.key) == job_id.encode()
    job = Job.fetch(job_id, connection=redis_client)
    job.retries_left = 0
    job.save()
    job.set_status(JobStatus.STARTED)
    # Its heartbeat lapsed a second ago.
    redis_client.zadd(actions_queue.started_job_registry.key, {f"{job_id}:dead0execution": time.time() - 1})
    redis_client.hset(actions.ACTION_PREFIX + action_id, "status", "running")

    report = run_sweep(redis_client)
    assert report.actions_failed == [action_id] and not report.actions_requeued
    assert job_id in FailedJobRegistry(ACTIONS_QUEUE, connection=redis_client).get_job_ids()
    record = actions.record(redis_client, action_id)
    assert record["status"] == "failed" and record["last_error"]["code"] == "JobLost"
    assert [a["id"] for a in ops.failed_items(redis_client)] == [action_id]
    assert total(get_metrics(vendor_app.test_client()), "mediahook_sweep_failed_total", what="action") == 1


def test_action_whose_job_is_gone_is_marked_failed(vendor_app, redis_client):
    """No job to put back (its hash is gone, and the record's params have secrets masked): the
    action is listed as failed, for a replay of its event to queue it anew."""
    [action_id] = ops.koophone_apply(redis_client, _worker_settings(), "low", ["phone-x"])
    job_id = actions.job_id(action_id)
    assert redis_client.lpop(queue(redis_client, ACTIONS_QUEUE).key) == job_id.encode()
    redis_client.delete(Job.key_for(job_id))

    report = run_sweep(redis_client)
    assert report.actions_failed == [action_id] and not report.actions_requeued
    record = actions.record(redis_client, action_id)
    assert record["status"] == "failed" and "gone" in record["last_error"]["message"]
    assert redis_client.zscore(actions.OPEN_INDEX, action_id) is None


def test_live_jobs_are_not_touched(base_config, sim, redis_client, workers, make_app):
    """Queued and scheduled jobs (no worker yet), then a job running in a real worker with its
    heartbeat: all live, none queued again, none counted."""
    sections = vendor_sections(sim.url)
    sections["koophone"]["read_timeout"] = 20.0
    client = make_app(**sections).test_client()
    event_id = client.post(UPLOAD, data=upload_body(("VLIVE", 360))).json["event_id"]
    later = "koophone-manual-later-0"
    actions.enqueue(redis_client, later, actions.VIDEO_SETTINGS_APPLY, event_id=None,
                    policy=None, delay=600, params={"action_id": later, "profile": "low", "instance_ids": ["p"]})
    before = {name: queue(redis_client, name).get_job_ids() for name in (EVENTS_QUEUE, ACTIONS_QUEUE)}

    report = run_sweep(redis_client)
    assert (report.events_requeued, report.actions_requeued, report.actions_failed) == ([], [], [])
    assert report.events_checked == 1 and report.actions_checked == 1
    assert {name: queue(redis_client, name).get_job_ids() for name in before} == before
    assert redis_client.hget(f"mh:event:{event_id}", "status") == b"queued"
    assert actions.record(redis_client, later)["status"] == "queued"

    set_faults(sim.url, {"koophone": {"latency_ms": 8000}})
    workers.start(redis_client, **sections)
    [running] = ops.koophone_apply(redis_client, _worker_settings(), "low", ["phone-1"])
    wait_until(lambda: (actions.record(redis_client, running) or {}).get("status") == "running", timeout=20,
               what="the action to run in the worker")
    report = run_sweep(redis_client)
    assert (report.events_requeued, report.actions_requeued, report.actions_failed) == ([], [], [])
    assert actions.record(redis_client, running)["status"] == "running"  # the sweep ran while it did
    assert total(get_metrics(client), "mediahook_sweep_requeued_total") == 0
    wait_until(lambda: actions.record(redis_client, running)["status"] == "succeeded", timeout=30,
               what="the running action to finish, run once")
    assert actions.record(redis_client, running)["attempts"] == 1
    assert len(sim_calls(sim.url, "koophone")) == 1


def _worker_settings():
    from workers.context import settings

    return settings()


def test_a_worker_sweeps_in_its_maintenance_pass_once_per_interval(sim, make_app, redis_client, workers):
    """An event acknowledged a minute ago whose job was popped and lost: a real `mediahook worker`
    started afterwards finds it in its first maintenance pass and runs it, once."""
    sections = vendor_sections(sim.url)
    client = make_app(**sections).test_client()
    event_id = client.post(UPLOAD, data=upload_body(("VWORKER", 480))).json["event_id"]
    assert redis_client.lpop(queue(redis_client, EVENTS_QUEUE).key) == f"event-{event_id}".encode()
    redis_client.zadd("mh:events", {event_id: time.time() - 60}, xx=True)  # received a minute ago

    workers.start(redis_client, **sections)
    wait_until(lambda: one_task_per_rung(sim.url, redis_client, "VWORKER"), timeout=30,
               what="the worker's sweep to queue the lost event and the worker to run it")
    assert redis_client.hget(f"mh:event:{event_id}", "status") == b"processed"
    assert 0 < redis_client.ttl(sweep.LAST_KEY) <= sweep.INTERVAL_SECONDS
    assert sweep.from_worker(redis_client) is None  # another worker, within the interval: no second pass
    assert total(get_metrics(client), "mediahook_sweep_requeued_total", what="event") == 1
    assert len(sim_calls(sim.url, "muducloud", "create-transcode")) == len(
        transcode.video_transcodes(redis_client, "VWORKER"))


def test_mediahook_sweep_command(base_config, redis_client, make_app, tmp_path):
    client = make_app().test_client()
    event_id = client.post(UPLOAD, data=upload_body(("VCLI", 360))).json["event_id"]
    redis_client.lpop(queue(redis_client, EVENTS_QUEUE).key)
    config = tmp_path / "cli.toml"
    config.write_text(to_toml(base_config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAHOOK_") and k != "REDIS_URL"}
    env["MEDIAHOOK_CONFIG"] = str(config)

    def cli(*args: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "app.cli", "sweep", "--grace", "0", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    dry = cli("--dry-run")
    assert dry["events_requeued"] == [event_id] and dry["dry_run"] is True
    assert queue(redis_client, EVENTS_QUEUE).count == 0  # a dry run changes nothing
    done = cli()
    assert done["events_requeued"] == [event_id] and done["full"] is True
    assert queue(redis_client, EVENTS_QUEUE).get_job_ids() == [f"event-{event_id}"]


def test_open_index_holds_the_pending_actions_and_the_sweep_drops_finished_ones(vendor_app, drive, redis_client):
    settings = _worker_settings()
    [action_id] = ops.koophone_apply(redis_client, settings, "low", ["phone-o"])
    assert redis_client.zscore(actions.OPEN_INDEX, action_id) is not None
    drive(lambda: actions.record(redis_client, action_id)["status"] == "succeeded", what="the action")
    assert redis_client.zscore(actions.OPEN_INDEX, action_id) is None
    # Queued again under the same id (a repeat delivery, a replay): RQ says it exists, and the
    # index briefly holds a finished action, which the sweep drops without running it.
    params = {"action_id": action_id, "profile": "low", "instance_ids": ["phone-o"]}
    assert actions.enqueue(redis_client, action_id, actions.VIDEO_SETTINGS_APPLY,
                           event_id=None, policy=settings.koophone.http, params=params) == "exists"
    assert redis_client.zscore(actions.OPEN_INDEX, action_id) is not None
    report = run_sweep(redis_client)
    assert report.actions_requeued == [] and report.actions_checked == 1
    assert redis_client.zscore(actions.OPEN_INDEX, action_id) is None
    assert actions.record(redis_client, action_id)["attempts"] == 1

"""A MetaStudio live job is started at most once per start request: the intent is recorded before
the call, so a worker killed mid-call, a gateway error after the job started, a bulk requeue or a
replay never sends a second start; the start ends "outcome unknown", and only an explicit
start-again (CLI or API) sends one new start request, recording the one it replaces."""

from __future__ import annotations

import time

import pytest
import requests
from click.testing import CliRunner
from rq import Queue
from rq.registry import FailedJobRegistry
from rq.scheduler import RQScheduler

from app.cli.main import main as cli
from app.core.queues import ACTIONS_QUEUE, QUEUES
from tests.conftest import vendor_sections
from tests.helpers import free_port, wait_until
from tests.vendor_harness import Workers, post_live, set_faults, sim_calls, stream_event, toml_dumps
from workers import actions, live, ops, sweep
from workers.context import settings as worker_settings

ROOM = "room-start-once"
OUTPUT_URL = "rtmp://live.example.com/app"
STREAM_KEY = "very-secret-stream-key"
TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def sections(sim_url: str, **http) -> dict:
    out = vendor_sections(sim_url)
    out["metastudio"].update(http)
    # Nothing listens at public_base_url: the simulator's callbacks fail quietly, which is fine here.
    return {"public_base_url": f"http://127.0.0.1:{free_port()}", "admin": {"token": TOKEN}, **out}


def sim_jobs(sim_url: str) -> list[dict]:
    return requests.get(f"{sim_url}/_sim/metastudio/jobs", timeout=5).json()["jobs"]


def status(redis, action_id: str) -> str | None:
    return (actions.record(redis, action_id) or {}).get("status")


def assert_outcome_unknown(redis, action_id: str) -> dict:
    record = actions.record(redis, action_id)
    assert (record["status"], record.get("outcome")) == ("failed", "unknown"), record
    assert actions.is_outcome_unknown(record)
    assert "outcome unknown" in record["last_error"]["message"]
    assert record["last_error"]["transient"] is False
    return record


@pytest.fixture
def workers(base_config, tmp_path):
    started = Workers(base_config, tmp_path)
    yield started
    started.stop_all()


# --- a worker killed mid-call ----------------------------------------------------------------

def give_up_the_dead_workers_job(redis) -> None:
    """Fast-forward what RQ does, with time, after a worker dies: its job's heartbeat entry in
    the StartedJobRegistry expires (bounded: checked), and the dead scheduler's lock too. The
    next worker's maintenance then finds the job abandoned and runs it again (RQ's own retry)."""
    wip = Queue(ACTIONS_QUEUE, connection=redis).started_job_registry.key
    entries = redis.zrange(wip, 0, -1, withscores=True)
    assert len(entries) == 1, entries  # the killed job, still "started"
    assert 0 < entries[0][1] - time.time() <= 30 + 60 + 1
    redis.zadd(wip, {entries[0][0]: time.time() - 1}, xx=True)
    for queue in QUEUES:
        redis.delete(RQScheduler.get_locking_key(queue))


def test_worker_killed_mid_start_ends_outcome_unknown_with_one_job(make_app, sim, redis_client, workers,
                                                                   drive):
    """A real `mediahook worker` is SIGKILLed while its start request is in flight; MetaStudio
    still starts the job. RQ then runs the abandoned job again: that attempt finds the intent
    recorded and must not call, but end "outcome unknown". Nothing but start-again re-runs it."""
    config = sections(sim.url, read_timeout=10.0)
    app = make_app(**config)
    set_faults(sim.url, {"metastudio": {"start-job": {"latency_ms": 1500}}})
    first = workers.start(redis_client, **config)
    action_id = live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    wait_until(lambda: any(c["pending"] for c in sim_calls(sim.url, "metastudio", "start-job")), timeout=20,
               what="the start request to be in flight")
    first.kill()  # worker, work horse and scheduler: SIGKILL, mid-call
    assert status(redis_client, action_id) == "running"
    wait_until(lambda: len(sim_jobs(sim.url)) == 1, timeout=10, what="MetaStudio to start the job anyway")

    # RQ gives the job up and runs it again (its retries allow it), on a new worker.
    set_faults(sim.url, {})
    give_up_the_dead_workers_job(redis_client)
    second = workers.start(redis_client, **config)
    try:
        wait_until(lambda: status(redis_client, action_id) == "failed", timeout=40, interval=0.1,
                   what="the abandoned start to be run again and fail")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{second.output()}") from None
    record = assert_outcome_unknown(redis_client, action_id)
    assert record["attempts"] == 2  # the second attempt ran, and did not call
    assert len(sim_calls(sim.url, "metastudio", "start-job")) == 1
    assert len(sim_jobs(sim.url)) == 1
    second.stop()

    # Listed as failed, with the field and what to check; a bulk requeue skips it, saying why.
    client = app.test_client()
    listed = client.get("/api/failed", headers=AUTH).json["items"]
    [item] = [i for i in listed if i["id"] == action_id]
    assert (item["outcome"], item["requeueable"]) == ("unknown", False)
    assert "MetaStudio" in item["resolve"] and f"live start-again {action_id}" in item["resolve"]
    r = client.post("/api/failed/requeue", json={"all": True}, headers=AUTH)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert action_id not in r.json["requeued"]
    [skipped] = [s for s in r.json["skipped"] if s["id"] == action_id]
    assert "outcome unknown" in skipped["reason"]
    assert not actions.requeue(redis_client, action_id)
    # Whatever enqueues the same action again (a replayed event re-deciding it) finds it, and runs nothing.
    assert actions.enqueue(redis_client, action_id, actions.LIVE_START, event_id=None,
                           params={"action_id": action_id, "room_id": ROOM, "output_url": OUTPUT_URL,
                                   "stream_key": STREAM_KEY}, policy=worker_settings().metastudio_api.http) == "exists"
    drive(lambda: redis_client.llen(f"rq:queue:{ACTIONS_QUEUE}") == 0, what="anything queued")
    assert_outcome_unknown(redis_client, action_id)
    assert len(sim_calls(sim.url, "metastudio", "start-job")) == 1

    # Start again, explicitly: exactly one new start request, recording what it replaces.
    r = client.post(f"/api/live/starts/{action_id}/start-again", headers=AUTH)
    assert r.status_code == 202, r.get_data(as_text=True)
    new_id = r.json["action_id"]
    assert (r.json["replaces"], r.json["room_id"]) == (action_id, ROOM) and new_id != action_id
    assert "NEW start request" in r.json["message"]
    again = client.post(f"/api/live/starts/{action_id}/start-again", json={}, headers=AUTH)
    assert again.status_code == 409 and new_id in again.json["message"]
    drive(lambda: status(redis_client, new_id) == "succeeded", what="the new start")
    assert len(sim_calls(sim.url, "metastudio", "start-job")) == 2
    assert [c["body"]["stream_keys"] for c in sim_calls(sim.url, "metastudio", "start-job")] == [[STREAM_KEY]] * 2
    new = actions.record(redis_client, new_id)
    assert (new["replaces"], new["params"]["replaces"]) == (action_id, action_id)
    assert actions.record(redis_client, action_id)["replaced_by"] == new_id
    assert STREAM_KEY not in str(redis_client.hgetall(f"mh:action:{new_id}"))


def test_killed_with_no_retry_left_the_sweep_marks_it_outcome_unknown(make_app, sim, redis_client, workers):
    """With no retry left, RQ fails the abandoned job without running it; the sweep then marks the
    action failed, and since it had recorded its intent, its outcome is unknown: not requeued."""
    config = sections(sim.url, read_timeout=10.0, retry_attempts=0)
    make_app(**config)
    set_faults(sim.url, {"metastudio": {"start-job": {"latency_ms": 1500}}})
    first = workers.start(redis_client, **config)
    action_id = live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    wait_until(lambda: any(c["pending"] for c in sim_calls(sim.url, "metastudio", "start-job")), timeout=20,
               what="the start request to be in flight")
    first.kill()
    give_up_the_dead_workers_job(redis_client)
    report = sweep.sweep(redis_client, grace=0, settle=0)
    assert action_id in report.actions_failed
    assert actions.record(redis_client, action_id)["outcome"] == "unknown"
    [item] = ops.failed_items(redis_client, ids=[action_id])
    assert item["requeueable"] is False and "start-again" in item["resolve"]
    assert ops.requeue_failed(redis_client, worker_settings(), [item])["requeued"] == []
    wait_until(lambda: len(sim_jobs(sim.url)) == 1, timeout=10, what="the job MetaStudio started anyway")
    assert len(sim_calls(sim.url, "metastudio", "start-job")) == 1


# --- gateway errors after the job started -------------------------------------------------------

@pytest.mark.parametrize("gateway_status", [502, 504])
def test_gateway_error_after_the_start_is_outcome_unknown(gateway_status, make_app, sim, drive, redis_client):
    make_app(**sections(sim.url))
    set_faults(sim.url, {"metastudio": {"start-job": {"error_times": 1, "error_status": gateway_status,
                                                      "after_effect": True}}})
    action_id = live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    drive(lambda: status(redis_client, action_id) in ("failed", "succeeded"), what="the start to end")
    record = assert_outcome_unknown(redis_client, action_id)
    assert (record["attempts"], record["last_error"]["status"]) == (1, gateway_status)
    assert len(sim_jobs(sim.url)) == 1 and len(sim_calls(sim.url, "metastudio", "start-job")) == 1
    assert not FailedJobRegistry(ACTIONS_QUEUE, connection=redis_client).get_job_ids() or not actions.requeue(
        redis_client, action_id)


def test_a_503_starts_nothing_and_is_retried(make_app, sim, drive, redis_client):
    make_app(**sections(sim.url))
    set_faults(sim.url, {"metastudio": {"start-job": {"error_times": 1, "error_status": 503}}})
    action_id = live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    drive(lambda: status(redis_client, action_id) == "succeeded", what="the start to be retried")
    assert actions.record(redis_client, action_id)["attempts"] == 2
    assert len(sim_jobs(sim.url)) == 1


def test_replay_skips_an_outcome_unknown_action_and_says_so(make_app, sim, drive, redis_client):
    """An event's replay requeues its failed actions, but never one whose outcome is unknown."""
    # localhost: the Host of the test client's signed live events (no callbacks arrive there).
    app = make_app(**{**sections(sim.url), "public_base_url": "http://localhost"})
    set_faults(sim.url, {"metastudio": {"start-job": {"drop_times": 1, "after_effect": True}}})
    action_id = live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    drive(lambda: status(redis_client, action_id) == "failed", what="the start to fail")
    assert_outcome_unknown(redis_client, action_id)
    client = app.test_client()
    event_id = post_live(client, stream_event(ROOM, "CONNECTED"))
    redis_client.sadd(actions.EVENT_ACTIONS_PREFIX + event_id, action_id)  # as an event-driven start would be
    r = client.post(f"/api/events/{event_id}/replay", headers=AUTH)
    assert r.status_code == 202, r.get_data(as_text=True)
    [skipped] = r.json["skipped"]
    assert skipped["id"] == action_id and "outcome unknown" in skipped["reason"]
    drive(lambda: redis_client.llen(f"rq:queue:{ACTIONS_QUEUE}") == 0 and redis_client.llen(
        "rq:queue:mediahook-events") == 0, what="the replay")
    assert_outcome_unknown(redis_client, action_id)
    assert len(sim_calls(sim.url, "metastudio", "start-job")) == 1


# --- start again: refusals, and the CLI ---------------------------------------------------------

def test_start_again_refuses_what_is_not_a_failed_start(make_app, sim, drive, redis_client):
    client = make_app(**sections(sim.url)).test_client()
    assert client.post("/api/live/starts/nope/start-again", headers=AUTH).status_code == 404
    action_id = live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    r = client.post(f"/api/live/starts/{action_id}/start-again", headers=AUTH)
    assert r.status_code == 409 and "queued" in r.json["message"]  # not failed: it may still start
    drive(lambda: status(redis_client, action_id) == "succeeded", what="the start")
    r = client.post(f"/api/live/starts/{action_id}/start-again", headers=AUTH)
    assert r.status_code == 409 and "succeeded" in r.json["message"]  # a job runs: a second one is not "again"
    [koophone] = ops.koophone_apply(redis_client, worker_settings(), "low", ["phone-9"])
    r = client.post(f"/api/live/starts/{koophone}/start-again", headers=AUTH)
    assert r.status_code == 409 and "not a live start" in r.json["message"]
    assert len(sim_jobs(sim.url)) == 1


def test_cli_lists_outcome_unknown_and_starts_again_once(make_app, sim, drive, redis_client, base_config,
                                                        tmp_path):
    config = sections(sim.url, read_timeout=0.3)
    make_app(**config)
    path = tmp_path / "cli.toml"
    path.write_text(toml_dumps({**base_config, **config}))
    env = {"MEDIAHOOK_CONFIG": str(path), "REDIS_URL": None}
    set_faults(sim.url, {"metastudio": {"start-job": {"timeout_times": 1, "timeout_sleep_s": 0.8}}})
    action_id = live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    drive(lambda: status(redis_client, action_id) == "failed", what="the start to time out")
    assert_outcome_unknown(redis_client, action_id)

    listed = CliRunner().invoke(cli, ["failed", "--requeue"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "outcome unknown: MetaStudio may have started a live job" in listed.output
    assert "requeued 0, skipped 1" in listed.output and f"skipped {action_id}: outcome unknown" in listed.output

    declined = CliRunner().invoke(cli, ["live", "start-again", action_id], env=env, input="n\n")
    assert declined.exit_code != 0 and "Send a NEW start request to MetaStudio for room" in declined.output
    assert "mh:action" not in declined.output and not actions.record(redis_client, action_id).get("replaced_by")

    done = CliRunner().invoke(cli, ["live", "start-again", action_id], env=env, input="y\n")
    assert done.exit_code == 0, done.output
    new_id = actions.record(redis_client, action_id)["replaced_by"]
    assert f"queued a NEW start request for room {ROOM} ({new_id}), replacing {action_id}" in done.output
    twice = CliRunner().invoke(cli, ["live", "start-again", action_id, "--yes"], env=env)
    assert twice.exit_code != 0 and f"already started again as {new_id}" in twice.output
    drive(lambda: status(redis_client, new_id) == "succeeded", what="the new start")
    assert len(sim_calls(sim.url, "metastudio", "start-job")) == 2

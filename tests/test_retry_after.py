"""A transient answer's Retry-After sets the next retry's time, for a 5xx as for a 429, for
every vendor: asserted on where RQ scheduled the retry, not by waiting for it."""

from __future__ import annotations

import time

from rq import Queue, SimpleWorker

from app.core.queues import ACTIONS_QUEUE, EVENTS_QUEUE
from tests.conftest import vendor_sections
from tests.helpers import free_port
from tests.vendor_harness import UPLOAD, set_faults, upload_body
from workers import actions, live, ops
from workers.context import settings as worker_settings

RETRY_AFTER = 4
UNAVAILABLE = {"error_times": 1, "error_status": 503, "retry_after_s": RETRY_AFTER}


def run_one(redis, queue_name: str = ACTIONS_QUEUE) -> None:
    """One job off the queue, in this process; RQ's scheduler is not run, so a retry stays scheduled."""
    SimpleWorker([Queue(queue_name, connection=redis)], connection=redis).work(
        burst=True, max_jobs=1, with_scheduler=False)


def scheduled_in(redis, action_id: str, since: float) -> float:
    """Seconds from ``since`` to the time RQ scheduled the action's retry for."""
    score = Queue(ACTIONS_QUEUE, connection=redis).scheduled_job_registry.get_scheduled_time(action_id)
    return score.timestamp() - since


def assert_retry_waits(redis, action_id: str, failed_after: float) -> None:
    doc = actions.record(redis, action_id)
    assert doc["status"] == "retrying", doc
    assert (doc["last_error"]["status"], doc["last_error"]["transient"]) == (503, True)
    assert scheduled_in(redis, action_id, failed_after) >= RETRY_AFTER


def test_koophone_503_retry_after_is_honoured(make_app, sim, redis_client):
    make_app(**vendor_sections(sim.url))
    set_faults(sim.url, {"koophone": {"video-setting": UNAVAILABLE}})
    [action_id] = ops.koophone_apply(redis_client, worker_settings(), "low", ["phone-1"])
    started = time.time()
    run_one(redis_client)
    assert_retry_waits(redis_client, action_id, started)


def test_metastudio_503_retry_after_is_honoured(make_app, sim, redis_client):
    """A 503 means the start request was not taken: retried (not "outcome unknown"), later."""
    make_app(public_base_url=f"http://127.0.0.1:{free_port()}", **vendor_sections(sim.url))
    set_faults(sim.url, {"metastudio": {"start-job": UNAVAILABLE}})
    action_id = live.queue_start(redis_client, worker_settings(), "room-1", "rtmp://live.example.com/app", "key")
    started = time.time()
    run_one(redis_client)
    assert_retry_waits(redis_client, action_id, started)


def test_muducloud_503_retry_after_is_honoured(vendor_app, sim, redis_client):
    set_faults(sim.url, {"muducloud": {"create-transcode": UNAVAILABLE}})
    r = vendor_app.test_client().post(UPLOAD, data=upload_body(("v-retry-after", 360)))
    assert r.status_code == 200, r.get_data(as_text=True)
    started = time.time()
    run_one(redis_client, EVENTS_QUEUE)  # the event job makes the creates' first attempts: the 503
    [action_id] = [a["id"] for a in actions.event_actions(redis_client, r.json["event_id"])
                   if a["status"] == "retrying"]
    assert_retry_waits(redis_client, action_id, started)

"""MetaStudio live jobs: the per-job script timeline (SHOOT_SCRIPT_SWITCH, REPLY_COMMAND_FINISH)
and `live.queue_start`, whose job's signed callbacks come back over real HTTP to a real gunicorn
of this service at its public_base_url."""

from __future__ import annotations

import json

import pytest
import requests
from rq import Queue, SimpleWorker

from app.core.events import job_id_for
from app.core.queues import EVENTS_QUEUE
from tests.conftest import ROOM, vendor_sections
from tests.helpers import LIVE_EVENTS, MS_KEY, MS_TOKEN, free_port, live_event, wait_until
from tests.vendor_harness import converter, post_live, set_faults, sim_calls
from workers import actions, live, ops, streams, timeline
from workers.context import settings as worker_settings
from workers.converter import CREATED_PREFIX

EVENTS_LIST = f"rq:queue:{EVENTS_QUEUE}"
JOB = "e87104f76d7546ce8a46ac6b04c49c3c"
OUTPUT_URL = "rtmp://live.example.com/app"
STREAM_KEY = "very-secret-stream-key"


def switch(no, title: str | None = None) -> bytes:
    return live_event("SHOOT_SCRIPT_SWITCH", room_id=ROOM, job_id=JOB, scene_script_name="Scene 1",
                      shoot_script_sequence_no=no, shoot_script_title=title or f"Paragraph {no}")


def reply(reply_id: str) -> bytes:
    return live_event("REPLY_COMMAND_FINISH", room_id=ROOM, job_id=JOB, reply_id=reply_id)


def status(redis, action_id: str) -> str | None:
    return (actions.record(redis, action_id) or {}).get("status")


# --- the timeline ---------------------------------------------------------------------------

def test_script_switches_and_replies_make_the_timeline(app, drive, redis_client):
    client = app.test_client()
    post_live(client, switch("1"))
    post_live(client, reply("reply-a"))
    post_live(client, switch(2))  # a number, not a string: accepted too
    post_live(client, reply("reply-b"))
    drive(lambda: redis_client.llen(EVENTS_LIST) == 0, what="the events")
    shown = timeline.show(redis_client, JOB)
    assert (shown["room_id"], shown["scene_script_name"], shown["shoot_script_sequence_no"],
            shown["shoot_script_title"]) == (ROOM, "Scene 1", "2", "Paragraph 2")
    assert [r["reply_id"] for r in shown["finished_replies"]] == ["reply-a", "reply-b"]
    assert timeline.show(redis_client, "no-such-job") is None


def test_a_switch_processed_late_does_not_move_the_timeline_back(app, redis_client, drive):
    client = app.test_client()
    first = post_live(client, switch("1"))
    second = post_live(client, switch("2"))
    redis_client.lmove(EVENTS_LIST, EVENTS_LIST, "RIGHT", "LEFT")  # the worker gets to "2" first
    assert redis_client.lindex(EVENTS_LIST, 0).decode() == job_id_for(second)
    SimpleWorker([Queue(EVENTS_QUEUE, connection=redis_client)], connection=redis_client).work(
        burst=True, max_jobs=1, with_scheduler=False)
    assert timeline.show(redis_client, JOB)["shoot_script_sequence_no"] == "2"
    drive(lambda: redis_client.llen(EVENTS_LIST) == 0, what="the late switch")
    shown = timeline.show(redis_client, JOB)
    assert (shown["shoot_script_sequence_no"], shown["script_event_id"]) == ("2", second)
    assert ops.event_details(redis_client, first)["notes"] == [
        "a switch ordered after this one already moved the script timeline"]

    # The same reply finished twice (another delivery with a different body): listed once.
    post_live(client, reply("reply-x"))
    post_live(client, live_event("REPLY_COMMAND_FINISH", room_id=ROOM, job_id=JOB, reply_id="reply-x", extra=1))
    drive(lambda: redis_client.llen(EVENTS_LIST) == 0, what="the replies")
    assert [r["reply_id"] for r in timeline.show(redis_client, JOB)["finished_replies"]] == ["reply-x"]


# --- live start -----------------------------------------------------------------------------

@pytest.fixture
def web_at(gunicorn_server):
    """web_at(**config) -> base URL of a real gunicorn whose public_base_url is that URL."""
    return lambda **overrides: gunicorn_server(self_base_url=True, **overrides)


SOURCES = {
    "MSS_A": {"auth_type": "MSS_A", "key": MS_KEY},
    "MSS_A_HEAD": {"auth_type": "MSS_A_HEAD", "key": MS_KEY},
    "NONE": {"auth_type": "NONE", "token": MS_TOKEN},
}


@pytest.mark.parametrize("auth_type", sorted(SOURCES))
def test_live_start_points_the_callbacks_at_this_service(auth_type, web_at, make_app, sim, drive, redis_client):
    source = {"sources": {"metastudio": SOURCES[auth_type]}}
    base = web_at(**source)
    make_app(public_base_url=base, **source, **vendor_sections(sim.url))  # the in-process workers' settings
    action_id = live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    drive(lambda: status(redis_client, action_id) == "succeeded", what="the start action")

    [call] = sim_calls(sim.url, "metastudio", "start-job")
    assert call["path"] == f"/v1/proj-1/smart-live-rooms/{ROOM}/smart-live-jobs"
    assert call["body"]["output_urls"] == [OUTPUT_URL] and call["body"]["stream_keys"] == [STREAM_KEY]
    expected = {"auth_type": auth_type, "live_event_type_callback_url": base + LIVE_EVENTS,
                "callback_event_type": ["SHOOT_SCRIPT_SWITCH", "RTMP_STREAM_STATE_CHANGE", "REPLY_COMMAND_FINISH"]}
    if auth_type == "NONE":
        expected["live_event_type_callback_url"] += f"?token={MS_TOKEN}"
    else:
        expected["key"] = MS_KEY
    assert call["body"]["live_event_callback_config"] == expected

    job_id = actions.record(redis_client, action_id)["result"]["job_id"]
    recorded = timeline.show(redis_client, job_id)
    assert (recorded["room_id"], recorded["output_url"], recorded["start_action"]) == (ROOM, OUTPUT_URL, action_id)
    # The stream key reaches MetaStudio but is kept out of the action's record.
    assert STREAM_KEY not in json.dumps(ops.action(redis_client, action_id))
    assert STREAM_KEY not in str(redis_client.hgetall(f"mh:action:{action_id}"))

    # MetaStudio's six signed callbacks reach gunicorn and are accepted (200) ...
    wait_until(lambda: len([c for c in sim_calls(sim.url, "metastudio-callbacks") if not c["pending"]]) == 6,
               timeout=20, what="the six callbacks")
    callbacks = sim_calls(sim.url, "metastudio-callbacks")
    assert [c["answer"]["status"] for c in callbacks] == [200] * 6, callbacks
    # ... and processed into the job's timeline, its stream state and the bound converter.
    drive(lambda: (timeline.show(redis_client, job_id) or {}).get("finished_replies")
          and redis_client.llen(EVENTS_LIST) == 0 and redis_client.llen("rq:queue:mediahook-actions") == 0,
          what="the callbacks' events and actions")
    shown = timeline.show(redis_client, job_id)
    assert (shown["shoot_script_sequence_no"], shown["shoot_script_title"]) == ("2", "Paragraph 2")
    assert len(shown["finished_replies"]) == 1
    assert streams.latest(redis_client, ROOM)["state"] == "END"
    assert [h["state"] for h in streams.states(redis_client, ROOM)] == ["CONNECTING", "CONNECTED", "END"]
    converter_id = redis_client.get(CREATED_PREFIX + f"room-{ROOM}").decode()
    assert converter(sim.url, converter_id)["auto_push_stream"] is False


def live_sections(sim_url: str, **http) -> dict:
    sections = vendor_sections(sim_url)
    sections["metastudio"].update(http)
    # Nothing listens here: the simulator's callbacks fail quietly, which these tests ignore.
    return {"public_base_url": f"http://127.0.0.1:{free_port()}", **sections}


def test_live_start_timeout_fails_as_outcome_unknown_without_a_second_job(make_app, sim, drive, redis_client):
    make_app(**live_sections(sim.url, read_timeout=0.3))
    set_faults(sim.url, {"metastudio": {"start-job": {"timeout_times": 1, "timeout_sleep_s": 0.8}}})
    action_id = live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    drive(lambda: status(redis_client, action_id) == "failed", what="the start to fail")
    record = actions.record(redis_client, action_id)
    assert record["attempts"] == 1 and "outcome unknown" in record["last_error"]["message"]
    assert record["last_error"]["transient"] is False
    assert [a["id"] for a in ops.failed_items(redis_client)] == [action_id]
    assert len(sim_calls(sim.url, "metastudio", "start-job")) == 1


def test_live_start_connection_lost_after_sending_is_not_retried(make_app, sim, drive, redis_client):
    """MetaStudio started the job, then the connection dropped before the answer: retrying
    would start a second live job, so the start fails as "outcome unknown" (like a timeout)."""
    make_app(**live_sections(sim.url))
    set_faults(sim.url, {"metastudio": {"start-job": {"drop_times": 1, "after_effect": True}}})
    action_id = live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    drive(lambda: status(redis_client, action_id) in ("failed", "succeeded"), what="the start to end")
    record = actions.record(redis_client, action_id)
    assert (record["status"], record["attempts"]) == ("failed", 1)
    assert "outcome unknown" in record["last_error"]["message"]
    assert len(requests.get(f"{sim.url}/_sim/metastudio/jobs", timeout=5).json()["jobs"]) == 1


def test_live_start_retries_a_refused_connection(make_app, sim, drive, redis_client):
    """Nothing was sent when the connection is refused: that one is safe to retry."""
    sections = live_sections(sim.url)
    sections["metastudio"]["base_url"] = f"http://127.0.0.1:{free_port()}"
    make_app(**sections)
    action_id = live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    drive(lambda: status(redis_client, action_id) == "failed", what="the retries to run out")
    record = actions.record(redis_client, action_id)
    assert record["attempts"] == 1 + sections["metastudio"]["retry_attempts"]
    assert "connection failed" in record["last_error"]["message"]


def test_live_start_retries_a_5xx_and_starts_one_job(make_app, sim, drive, redis_client):
    make_app(**live_sections(sim.url))
    set_faults(sim.url, {"metastudio": {"start-job": {"error_times": 1}}})
    action_id = live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    drive(lambda: status(redis_client, action_id) == "succeeded", what="the start to succeed")
    assert actions.record(redis_client, action_id)["attempts"] == 2
    jobs = requests.get(f"{sim.url}/_sim/metastudio/jobs", timeout=5).json()["jobs"]
    assert len(jobs) == 1 and jobs[0]["job_id"] == actions.record(redis_client, action_id)["result"]["job_id"]


def test_live_start_permanent_error_keeps_the_vendors_message(make_app, sim, drive, redis_client):
    sections = live_sections(sim.url)
    sections["metastudio"]["auth_token"] = "wrong-token"
    make_app(**sections)
    action_id = live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    drive(lambda: status(redis_client, action_id) == "failed", what="the start to fail")
    error = actions.record(redis_client, action_id)["last_error"]
    assert (error["vendor"], error["code"], error["message"], error["status"]) == (
        "metastudio", "MSS.00000001", "Unauthorized", 401)


def test_live_start_refuses_what_cannot_work(make_app, sim, redis_client):
    make_app(**vendor_sections(sim.url))  # no public_base_url
    with pytest.raises(ValueError, match="public_base_url"):
        live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    make_app(public_base_url="https://hooks.example.com")  # no [metastudio]
    with pytest.raises(ValueError, match=r"\[metastudio\]"):
        live.queue_start(redis_client, worker_settings(), ROOM, OUTPUT_URL, STREAM_KEY)
    assert live.callback_config(worker_settings())["live_event_type_callback_url"] == (
        "https://hooks.example.com/hooks/metastudio/live-events")

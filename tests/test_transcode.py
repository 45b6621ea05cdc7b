"""Transcode after upload: one Muducloud task per rung at or below the source height, polled
with backoff to a final state, kept per video and rung; exactly once in effect (the vendor's
create is not idempotent). Every vendor call goes over real HTTP to the simulator."""

from __future__ import annotations

import time

import pytest
import requests
from rq import Queue

from app.core.queues import ACTIONS_QUEUE
from app.core.vendor_config import TranscoderSchema
from tests.conftest import vendor_sections
from tests.vendor_harness import TEMPLATE_IDS, UPLOAD, origin, set_faults, sim_calls, sim_tasks, upload_body
from workers import actions, ops, transcode


def states(redis, *videos: str) -> dict[tuple[str, str], dict]:
    return {(v, rung): s for v in videos for rung, s in transcode.video_transcodes(redis, v).items()}


def final(redis, expected: int, *videos: str, state: str = "success"):
    """A predicate: the videos have ``expected`` rungs recorded, all in ``state``."""
    def check() -> bool:
        got = states(redis, *videos)
        return len(got) == expected and all(s.get("state") == state for s in got.values())
    return check


def tasks_by_rung(sim_url: str) -> dict[tuple[str, int], list[dict]]:
    out: dict[tuple[str, int], list[dict]] = {}
    for task in sim_tasks(sim_url):
        out.setdefault((task["origin_url"], task["task_config_temp_id"]), []).append(task)
    return out


def app_for(make_app, sim_url: str, **transcoder):
    sections = vendor_sections(sim_url)
    sections["transcoder"].update(transcoder)
    return make_app(**sections)


@pytest.mark.parametrize("state, encrypt, needed", [
    (1, 0, False), (2, 1, False), (3, 0, False), (3, 1, False),   # transcoded, or being transcoded
    (2, 0, True), (4, 0, True), (4, 1, True), (5, 0, True), (5, 1, True), (None, None, True),
])
def test_which_videos_need_a_transcode(state, encrypt, needed):
    assert transcode.needs_transcode({"transcodeState": state, "encrypt": encrypt}) is needed


def test_one_task_per_rung_at_or_below_the_source_height(vendor_app, sim, drive, redis_client):
    client = vendor_app.test_client()
    body = upload_body(("V1080", 1080), ("V480", 480), ("VUNKNOWN", None), ("VDONE", 720, "1"))
    r = client.post(UPLOAD, data=body)
    assert r.status_code == 200
    videos = ("V1080", "V480", "VUNKNOWN")
    drive(final(redis_client, 4 + 2 + 4, *videos), what="every rung to succeed")

    expected = {"V1080": ("360", "480", "720", "1080"), "V480": ("360", "480"), "VUNKNOWN": ("360", "480", "720",
                                                                                                 "1080")}
    by_rung = tasks_by_rung(sim.url)
    assert sorted(by_rung) == sorted((origin(v), TEMPLATE_IDS[r]) for v, rungs in expected.items() for r in rungs)
    assert all(len(tasks) == 1 for tasks in by_rung.values())
    assert not transcode.video_transcodes(redis_client, "VDONE")

    # The result is kept per video and rung: the vendor's task id and target URL.
    for (video, rung), state in states(redis_client, *videos).items():
        task = by_rung[(origin(video), TEMPLATE_IDS[rung])][0]
        assert state["task_id"] == task["id"]
        assert state["target_url"] == task["target_url"] == f"https://cdn.sim/{task['id']}/{rung}p.m3u8"
        assert float(state["progress"]) == 1.0

    shown = ops.event_details(redis_client, r.json["event_id"])
    assert set(shown["transcodes"]) == {"V1080", "V480", "VUNKNOWN", "VDONE"}
    assert set(shown["transcodes"]["V480"]) == {"360", "480"}
    assert any("VDONE" in note for note in shown["notes"])
    # Polled until final: every task was read at least once after its create.
    assert {c["query"]["id"] for c in sim_calls(sim.url, "muducloud", "get-transcode")} == {
        s["task_id"] for s in states(redis_client, *videos).values()}


def test_create_answer_lost_still_one_task_per_rung(vendor_app, sim, drive, redis_client):
    """The first create is done by Muducloud but its answer never arrives (connection dropped):
    the retry finds the task instead of creating a second one."""
    set_faults(sim.url, {"muducloud": {"create-transcode": {"drop_times": 1, "after_effect": True}}})
    vendor_app.test_client().post(UPLOAD, data=upload_body(("VLOST", 720)))
    drive(final(redis_client, 3, "VLOST"), what="the three rungs to succeed")

    creates = sim_calls(sim.url, "muducloud", "create-transcode")
    assert len(creates) == 3
    lost = creates[0]
    assert lost["fault"]["kind"] == "drop" and lost["answer"] is None
    rung = next(r for r, t in TEMPLATE_IDS.items() if t == lost["body"]["task_config_temp_id"])
    assert transcode.video_transcodes(redis_client, "VLOST")[rung]["task_id"] == lost["effect"]["body"]["id"]
    assert actions.record(redis_client, f"transcode-VLOST-{rung}")["attempts"] == 2
    assert all(len(t) == 1 for t in tasks_by_rung(sim.url).values()) and len(sim_tasks(sim.url)) == 3


def test_repeats_before_any_worker_runs_make_no_second_task(vendor_app, sim, drive, redis_client):
    """The same video in several callbacks (a repeat, another form of the body, a later callback
    listing it again) and a replay, all queued before a worker gets to them."""
    client = vendor_app.test_client()
    first = client.post(UPLOAD, data=upload_body(("VREP", 480))).json["event_id"]
    again = client.post(UPLOAD, data=upload_body(("VREP", 480))).json["event_id"]
    assert again == first  # an exact repeat is the same event
    other = client.post(UPLOAD, data=upload_body(("VREP", 480), ("VNEW", 360))).json["event_id"]
    ops.replay(redis_client, first)
    ops.replay(redis_client, other)
    drive(final(redis_client, 3, "VREP", "VNEW"), what="the rungs to succeed")
    by_rung = tasks_by_rung(sim.url)
    assert sorted(by_rung) == [(origin("VNEW"), 1), (origin("VREP"), 1), (origin("VREP"), 2)]
    assert len(sim_calls(sim.url, "muducloud", "create-transcode")) == 3


def test_failed_task_is_resubmitted_then_succeeds(make_app, make_sim, drive, redis_client):
    sim = make_sim(fail_rate=1.0)
    app = app_for(make_app, sim.url, ladder=["360"], resubmit_count=1)
    app.test_client().post(UPLOAD, data=upload_body(("VRETRY", 720)))
    drive(lambda: sim_calls(sim.url, "muducloud", "create-transcode"), what="the first create")
    state = sim.app.extensions["simulators"]
    with state.lock:
        state.config["muducloud"]["fail_rate"] = 0.0  # the next task will work
    drive(final(redis_client, 1, "VRETRY"), what="the resubmitted task to succeed")

    rung = transcode.video_transcodes(redis_client, "VRETRY")["360"]
    tasks = {t["id"]: t for t in sim_tasks(sim.url)}
    assert set(tasks) == {rung["failed_task_ids"], rung["task_id"]} and len(tasks) == 2
    assert tasks[rung["failed_task_ids"]]["status"] == 3 and tasks[rung["task_id"]]["status"] == 2
    assert rung["resubmits"] == "1"
    assert actions.record(redis_client, "transcode-VRETRY-360-resubmit1")["status"] == "succeeded"


@pytest.mark.parametrize("resubmit_count", [0, 2])
def test_task_failing_every_time_ends_failed_after_resubmit_count(make_app, make_sim, drive, redis_client,
                                                                   resubmit_count):
    sim = make_sim(fail_rate=1.0)
    app = app_for(make_app, sim.url, ladder=["480"], resubmit_count=resubmit_count)
    app.test_client().post(UPLOAD, data=upload_body(("VBAD", 720)))
    drive(final(redis_client, 1, "VBAD", state="failed"), what="the transcode to fail for good")
    rung = transcode.video_transcodes(redis_client, "VBAD")["480"]
    assert rung["error"] == "2001: simulated failure: the source could not be decoded"
    tasks = sim_tasks(sim.url)
    assert len(tasks) == resubmit_count + 1 and {t["status"] for t in tasks} == {3}
    assert int(rung.get("resubmits", 0)) == resubmit_count


def test_deleted_task_and_deadline(make_app, make_sim, drive, redis_client):
    """Polling also ends when the task is deleted at the vendor, or when the deadline passes."""
    sim = make_sim(transcode_seconds=60)
    app = app_for(make_app, sim.url, ladder=["360", "480"], poll_deadline_seconds=1)
    app.test_client().post(UPLOAD, data=upload_body(("VSLOW", 720)))
    drive(lambda: len([s for s in states(redis_client, "VSLOW").values() if s.get("task_id")]) == 2,
          what="both rungs submitted")
    task_360 = transcode.video_transcodes(redis_client, "VSLOW")["360"]["task_id"]
    r = requests.post(f"{sim.url}/transcoding/api/delete-transcode", json={"id": task_360}, timeout=5)
    assert r.json()["errcode"] == 1000
    drive(lambda: {r: s["state"] for r, s in transcode.video_transcodes(redis_client, "VSLOW").items()} == {
        "360": "deleted", "480": "timed_out"}, what="deleted and timed out")
    assert transcode.video_transcodes(redis_client, "VSLOW")["480"]["error"] == "not final after 1s"
    assert len(sim_tasks(sim.url)) == 2  # neither was resubmitted


def test_polls_back_off_exponentially_up_to_the_max(redis_client, sim):
    cfg = TranscoderSchema().load({"base_url": sim.url, "poll_initial_seconds": 10, "poll_max_seconds": 40})
    registry = Queue(ACTIONS_QUEUE, connection=redis_client).scheduled_job_registry
    delays = []
    for n in range(1, 6):
        before = time.time()
        transcode._schedule_poll(redis_client, cfg, "VPOLL", "360", "task1", n)
        at = registry.get_scheduled_time(f"transcode-poll-task1-{n}").timestamp()
        delays.append(at - before)
    for got, want in zip(delays, (10, 20, 40, 40, 40), strict=True):
        assert want - 1.5 <= got <= want + 0.5, delays

"""Every rung ends final and visible: a resubmit that meets a transient error still ends, a bad
ending (failed, deleted, timed out) is listed with the failed actions and re-run by a replay
(adopting a task that is still alive or succeeded late), a corrected callback sends its own URL,
any videoId the schema accepts works, and ordinary flakiness delays rungs without failing them,
reading the vendor's list only when a create's outcome is unknown. Real Redis, real HTTP to the
simulator, jobs run by `drive`."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from click.testing import CliRunner
from rq import Queue, SimpleWorker
from rq.job import JOB_ID_PATTERN, Job

from app.cli.main import main as cli
from app.core.queues import QUEUES
from simulators import muducloud as sim_muducloud
from tests.conftest import vendor_sections
from tests.helpers import wait_until
from tests.vendor_harness import TEMPLATE_IDS, UPLOAD, origin, set_faults, sim_calls, sim_tasks, toml_dumps, upload_body
from workers import actions, ops, transcode
from workers.context import settings as worker_settings

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def sections_for(sim_url: str, **transcoder) -> dict:
    sections = vendor_sections(sim_url)
    sections["transcoder"].update(transcoder)
    return sections


def rung(redis, video: str, name: str) -> dict[str, str]:
    return transcode.video_transcodes(redis, video).get(name, {})


def set_sim(sim, **values) -> None:
    state = sim.app.extensions["simulators"]
    with state.lock:
        state.config["muducloud"].update(values)


def live_tasks(sim_url: str, video: str, rung_name: str) -> list[dict]:
    return [t for t in sim_tasks(sim_url) if t["origin_url"] == origin(video)
            and t["task_config_temp_id"] == TEMPLATE_IDS[rung_name] and t["status"] in (-1, 0, 1, 2)]


def upload_with_domain(video_id: str, domain: str, height: int = 360) -> bytes:
    doc = json.loads(upload_body((video_id, height)))
    doc["data"]["videoListInfo"][0]["publishDomain"] = domain
    return json.dumps(doc).encode()


@pytest.mark.parametrize("after_effect", [False, True], ids=["error-before-create", "error-after-create"])
def test_resubmit_then_a_transient_create_error_still_ends_final(make_app, make_sim, drive, redis_client,
                                                                 after_effect):
    """The first task fails at the vendor; its resubmit's create errors once (before or after
    Muducloud created the task). The rung must still end, with one live task, none orphaned."""
    sim = make_sim(fail_rate=1.0)
    client = make_app(**sections_for(sim.url, ladder=["360"], resubmit_count=1)).test_client()
    client.post(UPLOAD, data=upload_body(("VRESUB", 720)))
    drive(lambda: sim_calls(sim.url, "muducloud", "create-transcode"), what="the first create")
    set_sim(sim, fail_rate=0.0)
    set_faults(sim.url, {"muducloud": {"create-transcode": {"error_times": 1, "after_effect": after_effect}}})

    drive(lambda: rung(redis_client, "VRESUB", "360").get("state") in transcode.FINAL_STATES, timeout=20,
          what="the resubmitted rung to end")
    state = rung(redis_client, "VRESUB", "360")
    assert state["state"] == "success"
    [live] = live_tasks(sim.url, "VRESUB", "360")
    assert live["id"] == state["task_id"] and live["status"] == 2
    # Every task at the vendor is the rung's, or one it knows failed: nothing orphaned.
    tasks = sim_tasks(sim.url)
    assert {t["id"] for t in tasks} == {state["task_id"], *state["failed_task_ids"].split(",")}
    assert len(tasks) == 2
    creates = sim_calls(sim.url, "muducloud", "create-transcode")
    assert len(creates) == (2 if after_effect else 3)  # a lost answer is found, not created again
    assert actions.record(redis_client, "transcode-VRESUB-360-resubmit1")["status"] == "succeeded"


def test_failed_rung_is_listed_everywhere_and_a_requeue_resubmits_it_once(make_app, make_sim, drive, redis_client,
                                                                          base_config, tmp_path):
    sim = make_sim(fail_rate=1.0)
    sections = sections_for(sim.url, ladder=["360"], resubmit_count=0)
    app = make_app(admin={"token": TOKEN}, **sections)
    event = app.test_client().post(UPLOAD, data=upload_body(("VBADEND", 720))).json["event_id"]
    drive(lambda: rung(redis_client, "VBADEND", "360").get("state") == "failed", what="the task to fail")

    action_id = "transcode-VBADEND-360"
    [listed] = ops.failed_items(redis_client)
    assert listed["id"] == action_id and listed["status"] == "failed"
    error = listed["last_error"]
    assert (error["vendor"], error["code"], error["message"], error["rung_state"]) == (
        "muducloud", 2001, "simulated failure: the source could not be decoded", "failed")

    [item] = ops.failed_items(redis_client, kind="transcode")
    assert item["id"] == action_id and item["event_id"] == event and item["requeueable"] is True
    assert item["failed_at"] and item["last_error"]["code"] == 2001

    r = app.test_client().get("/api/failed", headers=AUTH)
    assert r.status_code == 200
    [api_item] = r.json["items"]
    assert (api_item["id"], api_item["last_error"]["code"]) == (action_id, 2001)
    assert api_item["last_error"]["message"] == "simulated failure: the source could not be decoded"

    config = tmp_path / "cli.toml"
    config.write_text(toml_dumps({**base_config, **sections}))
    shown = CliRunner().invoke(cli, ["failed"], env={"MEDIAHOOK_CONFIG": str(config), "REDIS_URL": None})
    assert shown.exit_code == 0, shown.output
    assert action_id in shown.output and "2001" in shown.output and "could not be decoded" in shown.output
    assert time.strftime("%Y-%m-%d %H:%M", time.localtime(item["failed_at"])) in shown.output  # local time

    # Run the rung again (what `mediahook failed --requeue` does): one new task, and it succeeds.
    set_sim(sim, fail_rate=0.0)
    done = ops.requeue_failed(redis_client, worker_settings(), [item])
    assert done["requeued"] == [action_id]
    drive(lambda: rung(redis_client, "VBADEND", "360").get("state") == "success", what="the rerun to succeed")
    assert len(sim_calls(sim.url, "muducloud", "create-transcode")) == 2
    assert len(live_tasks(sim.url, "VBADEND", "360")) == 1
    assert ops.failed_items(redis_client) == []
    assert actions.record(redis_client, action_id)["status"] == "succeeded"

    # Replaying the event now changes nothing: the rung is done.
    ops.replay(redis_client, event)
    drive(lambda: redis_client.hget(f"mh:event:{event}", "replays") and not _queued(redis_client),
          what="the replay")
    assert len(sim_calls(sim.url, "muducloud", "create-transcode")) == 2


def _queued(redis) -> bool:
    return any(Queue(q, connection=redis).count for q in QUEUES)


def test_deleted_and_timed_out_rungs_are_listed_and_a_replay_ends_them_well(make_app, make_sim, drive,
                                                                              redis_client):
    """One task is deleted at Muducloud, the other outlives our deadline. Both are listed; a
    replay of the event creates a new task for the deleted rung and adopts the other task, which
    succeeded after our deadline (its target_url is recorded), without creating a second one."""
    sim = make_sim(transcode_seconds=60)
    client = make_app(admin={"token": TOKEN}, **sections_for(sim.url, ladder=["360", "480"],
                                                               poll_deadline_seconds=1)).test_client()
    event = client.post(UPLOAD, data=upload_body(("VLATE", 720))).json["event_id"]
    drive(lambda: all(rung(redis_client, "VLATE", r).get("task_id") for r in ("360", "480")),
          what="both rungs submitted")
    deleted_task = rung(redis_client, "VLATE", "360")["task_id"]
    late_task = rung(redis_client, "VLATE", "480")["task_id"]
    r = requests.post(f"{sim.url}/transcoding/api/delete-transcode", json={"id": deleted_task}, timeout=5)
    assert r.json()["errcode"] == 1000
    drive(lambda: {r: s["state"] for r, s in transcode.video_transcodes(redis_client, "VLATE").items()} == {
        "360": "deleted", "480": "timed_out"}, what="deleted and timed out")

    items = {i["id"]: i for i in client.get("/api/failed", headers=AUTH).json["items"]}
    assert set(items) == {"transcode-VLATE-360", "transcode-VLATE-480"}
    assert items["transcode-VLATE-360"]["last_error"]["code"] == "deleted"
    assert deleted_task in items["transcode-VLATE-360"]["last_error"]["message"]
    assert items["transcode-VLATE-480"]["last_error"]["code"] == "timed_out"
    assert items["transcode-VLATE-480"]["last_error"]["message"] == "not final after 1s"
    assert all(i["failed_at"] and i["event_id"] == event for i in items.values())

    set_sim(sim, transcode_seconds=0.3)  # the slow task is done now: it succeeded after our deadline
    ops.replay(redis_client, event)
    drive(lambda: {s["state"] for s in transcode.video_transcodes(redis_client, "VLATE").values()} == {"success"},
          what="both rungs to end well")
    late = rung(redis_client, "VLATE", "480")
    assert late["task_id"] == late_task and late["target_url"] == f"https://cdn.sim/{late_task}/480p.m3u8"
    assert rung(redis_client, "VLATE", "360")["task_id"] != deleted_task
    assert len(sim_calls(sim.url, "muducloud", "create-transcode")) == 3  # two first ones + the deleted rung's
    assert [len(live_tasks(sim.url, "VLATE", r)) for r in ("360", "480")] == [1, 1]
    assert ops.failed_items(redis_client) == []


def test_corrected_second_callback_sends_its_own_origin_url(vendor_app, sim, drive, redis_client):
    """The first callback's publishDomain is unusable: the create fails for good. The corrected
    callback runs the rung again with the new URL, and the action record shows what was sent."""
    client = vendor_app.test_client()
    client.post(UPLOAD, data=upload_with_domain("VDOMAIN", ""))
    drive(lambda: rung(redis_client, "VDOMAIN", "360").get("state") == "failed", what="the bad create")
    [bad] = sim_calls(sim.url, "muducloud", "create-transcode")
    assert bad["body"]["origin_url"] == "https:///VDOMAIN.mp4" and bad["answer"]["body"]["errcode"] == 1001

    client.post(UPLOAD, data=upload_with_domain("VDOMAIN", "vod.example.com"))
    drive(lambda: rung(redis_client, "VDOMAIN", "360").get("state") == "success", what="the corrected rung")
    _, good = sim_calls(sim.url, "muducloud", "create-transcode")
    assert good["body"]["origin_url"] == origin("VDOMAIN")
    record = actions.record(redis_client, "transcode-VDOMAIN-360")
    assert record["params"]["origin_url"] == origin("VDOMAIN") and record["status"] == "succeeded"
    assert rung(redis_client, "VDOMAIN", "360")["origin_url"] == origin("VDOMAIN")
    assert ops.failed_items(redis_client) == []


ODD_IDS = ["a.b", "with space", "ünïcödé-視頻", "x:y/z?&#", "tab\tand%25"]


def test_any_video_id_the_schema_accepts_is_transcoded_and_so_are_the_next(vendor_app, sim, drive, redis_client):
    videos = [*ODD_IDS, "VAFTER"]
    r = vendor_app.test_client().post(UPLOAD, data=upload_body(*((v, 360) for v in videos)))
    assert r.status_code == 200
    drive(lambda: all(rung(redis_client, v, "360").get("state") == "success" for v in videos),
          what="every video's rung to succeed")
    assert len(sim_tasks(sim.url)) == len(videos)
    for video in videos:
        record = actions.record(redis_client, f"transcode-{video}-360")  # the readable id is kept
        assert record and record["status"] == "succeeded"
        assert JOB_ID_PATTERN.fullmatch(actions.job_id(f"transcode-{video}-360"))
    # Ids that differ only in characters RQ refuses still get jobs of their own.
    assert actions.job_id("transcode-a.b-360") != actions.job_id("transcode-a:b-360")
    assert actions.job_id("transcode-VAFTER-360") == "transcode-VAFTER-360"
    urls = {c["body"]["origin_url"] for c in sim_calls(sim.url, "muducloud", "create-transcode")}
    assert "https://vod.example.com/a.b.mp4" in urls and "https://vod.example.com/with%20space.mp4" in urls
    assert ops.event_details(redis_client, r.json["event_id"])["status"] == "processed"


def test_throttled_create_reads_no_list(vendor_app, sim, drive, redis_client):
    """A 429 (or a clean create) says what happened: the vendor's list is not read."""
    set_faults(sim.url, {"muducloud": {"create-transcode": {"times_429": 2, "retry_after_s": 0}}})
    vendor_app.test_client().post(UPLOAD, data=upload_body(("VNOLIST", 480)))
    drive(lambda: all(rung(redis_client, "VNOLIST", r).get("state") == "success" for r in ("360", "480")),
          what="both rungs")
    assert len(sim_calls(sim.url, "muducloud", "create-transcode")) == 4
    assert sim_calls(sim.url, "muducloud", "get-transcodes") == []


def test_30_percent_transient_faults_delay_rungs_but_fail_none(make_app, sim, drive, redis_client):
    """Muducloud fails 30 % of all calls (5xx) on an account holding 1,000 older tasks: every rung
    succeeds, with one task each; the list is read only after a create whose outcome is unknown,
    and only its newest page (back to the create's time), whatever the account holds."""
    sim_muducloud.seed_tasks(sim.app.extensions["simulators"], 1000, age_s=3600)
    client = make_app(**vendor_sections(sim.url)).test_client()
    set_faults(sim.url, {"muducloud": {"error_rate": 0.3}}, seed=5)
    videos = [f"VFLAKY{n}" for n in range(8)]
    client.post(UPLOAD, data=upload_body(*((v, 720) for v in videos)))
    drive(lambda: all(rung(redis_client, v, r).get("state") in transcode.FINAL_STATES
                      for v in videos for r in ("360", "480", "720")), timeout=120, what="every rung to end")

    calls = sim_calls(sim.url, "muducloud")
    set_faults(sim.url, {})  # for reading the simulator's tasks below
    states = {(v, r): rung(redis_client, v, r) for v in videos for r in ("360", "480", "720")}
    assert {s["state"] for s in states.values()} == {"success"}
    assert ops.failed_items(redis_client, kind="transcode") == []
    tasks = sim_tasks(sim.url)
    for (video, name), state in states.items():
        [task] = [t for t in tasks if t["origin_url"] == origin(video) and t["status"] in (-1, 0, 1, 2)
                  and t["task_config_temp_id"] == TEMPLATE_IDS[name]]
        assert task["id"] == state["task_id"]

    faulted = [c for c in calls if c["fault"]]
    assert 0.15 <= len(faulted) / len(calls) <= 0.45, (len(faulted), len(calls))
    unknown_creates = [c for c in calls if c["endpoint"] == "create-transcode" and c["fault"]]
    lists = [c for c in calls if c["endpoint"] == "get-transcodes"]
    assert unknown_creates  # the seed makes some creates fail
    assert all(c["query"].get("page") == "1" for c in lists), [c["query"] for c in lists]
    # An unknown create costs one lookup before the next create, and one more once its rung is
    # final (for a create that landed late); a lookup that fails is simply tried again.
    answered = [c for c in lists if not c["fault"]]
    assert 1 <= len(answered) <= 2 * len(unknown_creates)


def test_submit_is_retried_until_the_rungs_deadline_not_a_count(make_app, sim, drive, redis_client):
    """Twelve 503s in a row outlast the two attempts RQ is given, not the rung's deadline."""
    client = make_app(**sections_for(sim.url, ladder=["360"], retry_attempts=2)).test_client()
    set_faults(sim.url, {"muducloud": {"create-transcode": {"error_times": 12, "error_status": 503}}})
    client.post(UPLOAD, data=upload_body(("VPATIENT", 720)))
    drive(lambda: rung(redis_client, "VPATIENT", "360").get("state") in transcode.FINAL_STATES,
          what="the rung to end")
    assert rung(redis_client, "VPATIENT", "360")["state"] == "success"
    assert len(sim_calls(sim.url, "muducloud", "create-transcode")) == 13
    assert actions.record(redis_client, "transcode-VPATIENT-360")["attempts"] == 13
    assert sim_calls(sim.url, "muducloud", "get-transcodes") == []  # a 503 created nothing: no lookup


def test_past_its_deadline_a_submit_fails_the_rung_visibly(make_app, sim, drive, redis_client):
    client = make_app(**sections_for(sim.url, ladder=["360"], retry_attempts=2,
                                     poll_deadline_seconds=1)).test_client()
    set_faults(sim.url, {"muducloud": {"create-transcode": {"error_rate": 1.0, "error_status": 503}}})
    client.post(UPLOAD, data=upload_body(("VNEVER", 720)))
    drive(lambda: rung(redis_client, "VNEVER", "360").get("state") in transcode.FINAL_STATES,
          what="the rung to give up")
    state = rung(redis_client, "VNEVER", "360")
    assert state["state"] == "failed" and state["error"] == "1500: internal error"
    [item] = ops.failed_items(redis_client, kind="transcode")
    assert item["id"] == "transcode-VNEVER-360" and item["last_error"]["code"] == 1500
    assert item["attempts"] > 3  # past RQ's count, until the deadline
    assert sim_tasks(sim.url) == []


def test_a_poll_that_errors_is_polled_again_not_failed(vendor_app, sim, drive, redis_client):
    set_faults(sim.url, {"muducloud": {"get-transcode": {"error_times": 8}}})
    vendor_app.test_client().post(UPLOAD, data=upload_body(("VPOLLERR", 360)))
    drive(lambda: rung(redis_client, "VPOLLERR", "360").get("state") in transcode.FINAL_STATES,
          what="the rung to end")
    assert rung(redis_client, "VPOLLERR", "360")["state"] == "success"
    polls = [c for c in sim_calls(sim.url, "muducloud", "get-transcode")]
    assert len([c for c in polls if c["fault"]]) == 8
    records = [actions.record(redis_client, k.decode()[len(actions.ACTION_PREFIX):])
               for k in redis_client.scan_iter(actions.ACTION_PREFIX + "transcode-poll-*")]
    assert records and all(r["status"] == "succeeded" and r["attempts"] == 1 for r in records)


def test_a_video_that_cannot_be_planned_is_noted_and_the_next_still_transcoded(vendor_app, sim, drive,
                                                                                redis_client):
    """A lone surrogate passes the schema (JSON allows the escape) but cannot be a Redis key:
    that video is noted on the event, and the video after it is transcoded all the same."""
    r = vendor_app.test_client().post(UPLOAD, data=upload_body(("\ud800broken", 360), ("VNEXT", 360)))
    assert r.status_code == 200
    drive(lambda: rung(redis_client, "VNEXT", "360").get("state") == "success", what="the next video's rung")
    event = ops.event_details(redis_client, r.json["event_id"])
    assert event["status"] == "processed"
    assert any("not planned" in note and "broken" in note for note in event["notes"]), event["notes"]


@pytest.mark.parametrize("oldest_first", [False, True], ids=["newest-first", "oldest-first"])
def test_a_lost_create_answer_is_found_reading_only_the_newest_end_of_a_large_account(make_app, make_sim, drive,
                                                                                       redis_client, oldest_first):
    """1,000 older tasks in the account, whichever order the vendor lists them in: the lookup
    after a lost answer reads one or two pages from the newest end and adopts the task."""
    sim = make_sim(list_oldest_first=oldest_first)
    sim_muducloud.seed_tasks(sim.app.extensions["simulators"], 1000, age_s=3600)
    client = make_app(**sections_for(sim.url, ladder=["360"])).test_client()
    set_faults(sim.url, {"muducloud": {"create-transcode": {"drop_times": 1, "after_effect": True}}})
    client.post(UPLOAD, data=upload_body(("VBIG", 720)))
    drive(lambda: rung(redis_client, "VBIG", "360").get("state") == "success", what="the rung to succeed")

    [create] = sim_calls(sim.url, "muducloud", "create-transcode")  # found, not created again
    assert rung(redis_client, "VBIG", "360")["task_id"] == create["effect"]["body"]["id"]
    pages = [int(c["query"]["page"]) for c in sim_calls(sim.url, "muducloud", "get-transcodes")]
    # One lookup before the next create, one once final (for a create that might land late): the
    # first page (it tells the order) and, listed oldest first, the last two.
    assert pages == ([1, 1] if not oldest_first else [1, 11, 10, 1, 11, 10])


def test_poll_chain_survives_a_kill_between_scheduling_the_next_poll_and_recording_it(make_app, make_sim, drive,
                                                                                       redis_client):
    """A worker killed after poll n scheduled poll n+1 but before it recorded poll_n = n+1 (the
    record is put back as it would be then): poll n+1 still runs, and the rung still ends."""
    sim = make_sim(transcode_seconds=30)
    client = make_app(**sections_for(sim.url, ladder=["360"])).test_client()
    client.post(UPLOAD, data=upload_body(("VCHAIN", 720)))
    drive(lambda: int(rung(redis_client, "VCHAIN", "360").get("poll_n") or 0) >= 2, what="a second poll scheduled")
    n = int(rung(redis_client, "VCHAIN", "360")["poll_n"])
    redis_client.hset(transcode.key("VCHAIN", "360"), "poll_n", n - 1)
    set_sim(sim, transcode_seconds=0.3)  # done by the next poll
    drive(lambda: rung(redis_client, "VCHAIN", "360").get("state") in transcode.FINAL_STATES, what="the rung to end")
    assert rung(redis_client, "VCHAIN", "360")["state"] == "success"



def run_one_job(redis) -> None:
    """Run the next job (a due scheduled one moved to its queue first), with an in-process worker."""
    for name in QUEUES:
        queue = Queue(name, connection=redis)
        for job_id in queue.scheduled_job_registry.get_jobs_to_schedule():
            queue.scheduled_job_registry.remove(job_id)
            queue.enqueue_job(Job.fetch(job_id, connection=redis))
    SimpleWorker([Queue(q, connection=redis) for q in QUEUES], connection=redis).work(
        burst=True, max_jobs=1, with_scheduler=False)


def test_a_resubmit_lost_between_recording_and_queueing_it_is_queued_by_the_next_callback(
        make_app, make_sim, redis_client, drive):
    """A worker dies after it recorded `resubmitting` but before the resubmit was queued (the
    queued job is taken away here): the next callback for the video queues it."""
    sim = make_sim(fail_rate=1.0)
    client = make_app(**sections_for(sim.url, ladder=["360"], resubmit_count=1)).test_client()
    client.post(UPLOAD, data=upload_body(("VLOSTRESUB", 720)))
    wait_until(lambda: run_one_job(redis_client) or rung(redis_client, "VLOSTRESUB", "360").get("state")
               == "resubmitting", what="the task to fail")
    Job.fetch(actions.job_id("transcode-VLOSTRESUB-360-resubmit1"), connection=redis_client).delete()
    set_sim(sim, fail_rate=0.0)

    client.post(UPLOAD, data=upload_body(("VLOSTRESUB", 720), ("VOTHER", 360)))
    drive(lambda: rung(redis_client, "VLOSTRESUB", "360").get("state") in transcode.FINAL_STATES,
          what="the rung to end")
    assert rung(redis_client, "VLOSTRESUB", "360")["state"] == "success"
    assert len(sim_calls(sim.url, "muducloud", "create-transcode")) == 3  # the failed one, the resubmit, VOTHER


def test_a_create_that_lands_after_its_timeout_is_deleted_once_the_rung_is_final(make_app, make_sim, drive,
                                                                                  redis_client):
    """The first create times out on our side and is still in flight at Muducloud: the retry's
    lookup finds nothing and creates a second task; the first lands later. Once the rung is
    final, the look for a late duplicate deletes it: no task is left running untracked."""
    sim = make_sim(transcode_seconds=2.0)
    client = make_app(**sections_for(sim.url, ladder=["360"])).test_client()  # read timeout 1 s
    set_faults(sim.url, {"muducloud": {"create-transcode": {"latency_ms": 1500}}})
    # Only the first create is slow: the fault is cleared while it is in flight.
    threading.Timer(0.3, set_faults, (sim.url, {})).start()
    client.post(UPLOAD, data=upload_body(("VLATEDUP", 720)))
    drive(lambda: rung(redis_client, "VLATEDUP", "360").get("state") in transcode.FINAL_STATES
          and not rung(redis_client, "VLATEDUP", "360").get("sweep_since"), what="the rung to end")

    state = rung(redis_client, "VLATEDUP", "360")
    assert state["state"] == "success"
    first, second = sim_calls(sim.url, "muducloud", "create-transcode")
    assert first["answer"]["body"]["id"] != state["task_id"] == second["answer"]["body"]["id"]
    tasks = {t["id"]: t for t in sim_tasks(sim.url)}
    assert tasks[first["answer"]["body"]["id"]]["status"] == 4  # the late one, deleted
    assert [t["id"] for t in tasks.values() if t["status"] in (-1, 0, 1, 2)] == [state["task_id"]]

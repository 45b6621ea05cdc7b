"""The upload path writes in batches (an upload's rung records and submits in one transaction, a
submit's first record write with its intent, a task's record with its first poll) and keeps every
guarantee: the intent is recorded before the create, a worker killed mid-create still ends with
one task per rung, the records keep every field people read, and ``actions.enqueue_many`` queues
exactly what ``actions.enqueue`` would. Real Redis, real HTTP to the simulators, real workers."""

from __future__ import annotations

import json
import time

import pytest
from rq import Queue
from rq.job import Job, JobStatus

from app.core.events import job_id_for
from app.core.queues import ACTIONS_QUEUE
from app.core.vendor_config import HttpPolicy
from tests.conftest import vendor_sections
from tests.helpers import wait_until
from tests.test_faults import assert_one_task_per_rung, expire_what_the_dead_worker_held, rung_states
from tests.vendor_harness import UPLOAD, Workers, origin, set_faults, sim_calls, sim_tasks, upload_body
from workers import actions, locks, ops, transcode

VIDEOS = ("VBATCH-A", "VBATCH-B")
RUNGS = ("360", "480", "720")  # the default ladder up to a 720 source
POLL_LATER = 3600.0  # the first polls stay scheduled: what a submit leaves is looked at as it is
# Every field a rung's record has once its task is created (the admin API, the console and
# `mediahook failed` read them): what the one-write-at-a-time code left, no more, no less.
RUNG_FIELDS = {"video_id", "rung", "updated_at", "wanted_url", "event_id", "action_id", "state", "give_up_at",
               "origin_url", "template_id", "intent_at", "unknown_since", "task_id", "submitted_at", "deadline",
               "poll_n", "progress"}
SUBMIT_FIELDS = {"id", "kind", "params", "created_at", "status", "attempts", "event_id", "updated_at", "result"}
POLL_FIELDS = {"id", "kind", "params", "created_at", "status", "attempts"}


@pytest.fixture
def workers(base_config, tmp_path):
    started = Workers(base_config, tmp_path)
    yield started
    started.stop_all()


def sections_for(sim_url: str, **transcoder) -> dict:
    sections = vendor_sections(sim_url)
    sections["transcoder"].update(transcoder)
    return sections


def upload(*videos: str) -> bytes:
    return upload_body(*((v, 720) for v in videos))


def test_records_after_an_upload_keep_every_field(make_app, sim, drive, redis_client):
    client = make_app(**sections_for(sim.url, poll_initial_seconds=POLL_LATER, poll_max_seconds=POLL_LATER)
                      ).test_client()
    event_id = client.post(UPLOAD, data=upload(*VIDEOS)).json["event_id"]
    submit_ids = {transcode.submit_action_id(v, r) for v in VIDEOS for r in RUNGS}
    drive(lambda: {(actions.record(redis_client, a) or {}).get("status") for a in submit_ids} == {"succeeded"},
          what="every submit")
    assert len(sim_calls(sim.url, "muducloud", "create-transcode")) == 6

    doc = ops.event_details(redis_client, event_id)
    assert {a["id"] for a in doc["action_states"]} == submit_ids
    assert set(doc["transcodes"]) == set(VIDEOS) and all(set(t) == set(RUNGS) for t in doc["transcodes"].values())
    scheduled = Queue(ACTIONS_QUEUE, connection=redis_client).scheduled_job_registry
    for (video, rung), state in rung_states(redis_client, *VIDEOS).items():
        assert set(state) == RUNG_FIELDS, set(state) ^ RUNG_FIELDS
        assert (state["state"], state["poll_n"], state["unknown_since"]) == ("submitted", "1", "")
        assert (state["wanted_url"], state["origin_url"], state["event_id"]) == (origin(video), origin(video), event_id)
        assert state["action_id"] == transcode.submit_action_id(video, rung)
        assert float(state["intent_at"]) <= float(state["submitted_at"]) < float(state["give_up_at"])
        assert redis_client.ttl(transcode.key(video, rung)) > transcode.TTL - 60

        submit = actions.record(redis_client, state["action_id"])
        assert set(submit) == SUBMIT_FIELDS, set(submit) ^ SUBMIT_FIELDS  # no run_by left behind
        assert (submit["attempts"], submit["event_id"], submit["result"]["task_id"]) == (1, event_id,
                                                                                          state["task_id"])
        assert redis_client.zscore(actions.OPEN_INDEX, state["action_id"]) is None

        # The first poll: its record queued (open), its job scheduled POLL_LATER out, saved with the task.
        poll_id = f"transcode-poll-{state['task_id']}-1"
        poll = actions.record(redis_client, poll_id)
        assert set(poll) == POLL_FIELDS and (poll["kind"], poll["status"]) == ("transcode.poll", "queued")
        assert poll["params"] == {"action_id": poll_id, "video_id": video, "rung": rung, "n": 1,
                                  "task_id": state["task_id"]}
        assert redis_client.zscore(actions.OPEN_INDEX, poll_id) is not None
        assert 0 < redis_client.ttl(actions.ACTION_PREFIX + poll_id) <= actions.ACTION_TTL
        due = scheduled.get_scheduled_time(actions.job_id(poll_id)).timestamp()
        assert abs(due - (float(state["submitted_at"]) + POLL_LATER)) < 5
        job = Job.fetch(actions.job_id(poll_id), connection=redis_client)
        assert job.get_status() == JobStatus.SCHEDULED and job.func_name == actions.TRANSCODE_POLL.job
        assert job.kwargs == poll["params"] and job.origin == ACTIONS_QUEUE and job.retries_left
    for video in VIDEOS:
        assert redis_client.ttl(transcode.VIDEO_RUNGS_PREFIX + video) > transcode.TTL - 60
    assert redis_client.ttl(actions.EVENT_ACTIONS_PREFIX + event_id) > actions.ACTION_TTL - 60


def test_a_second_upload_of_the_same_videos_queues_nothing_new(make_app, sim, drive, redis_client):
    """The batched plan reads every rung first: a rung with a live task is left alone, none twice."""
    client = make_app(**sections_for(sim.url, poll_initial_seconds=POLL_LATER, poll_max_seconds=POLL_LATER)
                      ).test_client()
    first = client.post(UPLOAD, data=upload(*VIDEOS)).json["event_id"]
    again = client.post(UPLOAD, data=upload(*VIDEOS, "VBATCH-C")).json["event_id"]
    drive(lambda: all(redis_client.hget(f"mh:event:{e}", "status") == b"processed" for e in (first, again))
          and len(rung_states(redis_client, *VIDEOS, "VBATCH-C")) == 9
          and {s.get("state") for s in rung_states(redis_client, *VIDEOS, "VBATCH-C").values()} == {"submitted"},
          what="both uploads")
    assert len(sim_tasks(sim.url)) == 9  # one per rung: the repeat made none for the first two videos
    doc = ops.event_details(redis_client, again)
    assert {a["id"] for a in doc["action_states"]} == {transcode.submit_action_id("VBATCH-C", r) for r in RUNGS}
    assert sum("in progress" in note for note in doc["notes"]) == 6, doc["notes"]


def test_a_video_whose_url_redis_cannot_take_is_noted_and_the_others_planned(make_app, sim, drive, redis_client):
    """The batched plan writes every rung in one transaction: a video whose origin URL cannot be
    written (a lone surrogate in the unquoted host: JSON allows the escape) is noted before it,
    so it cannot fail the others' writes."""
    doc = json.loads(upload(*VIDEOS))
    doc["data"]["videoListInfo"][0]["publishDomain"] = "vod\ud800.example.com"
    client = make_app(**sections_for(sim.url, poll_initial_seconds=POLL_LATER, poll_max_seconds=POLL_LATER)
                      ).test_client()
    event_id = client.post(UPLOAD, data=json.dumps(doc)).json["event_id"]
    drive(lambda: redis_client.hget(f"mh:event:{event_id}", "status") == b"processed"
          and {s.get("state") for s in rung_states(redis_client, VIDEOS[1]).values()} == {"submitted"},
          what="the other video's rungs")
    assert not rung_states(redis_client, VIDEOS[0]) and len(rung_states(redis_client, VIDEOS[1])) == 3
    notes = ops.event_details(redis_client, event_id)["notes"]
    assert any("not planned" in n and VIDEOS[0] in n and "UnicodeEncodeError" in n for n in notes), notes


def test_a_worker_killed_mid_create_in_an_upload_still_makes_one_task_per_rung(make_app, sim, redis_client,
                                                                                workers):
    """The event job makes the six creates one after the other; it is SIGKILLed while one is in
    flight. That rung's intent (and every field its first write carries) is recorded before the
    call; the rungs after it are kept for the dead event job. After the restart the killed rung
    adopts the task Muducloud made anyway, the others are created once: six tasks, six creates."""
    sections = sections_for(sim.url, read_timeout=5.0, poll_initial_seconds=POLL_LATER,
                            poll_max_seconds=POLL_LATER)
    client = make_app(**sections).test_client()
    set_faults(sim.url, {"muducloud": {"create-transcode": {"latency_ms": 1500}}})
    first = workers.start(redis_client, **sections)
    event_id = client.post(UPLOAD, data=upload(*VIDEOS)).json["event_id"]
    wait_until(lambda: any(c["pending"] for c in sim_calls(sim.url, "muducloud", "create-transcode")), timeout=20,
               what="a create to be in flight")
    first.kill()

    [in_flight] = sim_calls(sim.url, "muducloud", "create-transcode")  # the first of six, made in turn
    states = rung_states(redis_client, *VIDEOS)
    [(video, rung)] = [vr for vr, s in states.items() if s.get("state") == "creating"]
    killed = states[(video, rung)]
    assert in_flight["body"]["origin_url"] == killed["origin_url"] == origin(video)
    assert "task_id" not in killed and killed["unknown_since"] and killed["intent_at"]
    assert killed["action_id"] == transcode.submit_action_id(video, rung) and killed["give_up_at"]
    assert (actions.record(redis_client, killed["action_id"]) or {}).get("status") == "running"
    others = {vr: s for vr, s in states.items() if vr != (video, rung)}
    assert {s["state"] for s in others.values()} == {"queued"} and len(others) == 5
    for state in others.values():
        doc = actions.record(redis_client, state["action_id"])
        assert (doc["status"], doc["attempts"], doc[actions.RUN_BY]) == ("queued", 0, job_id_for(event_id))

    set_faults(sim.url, {})
    wait_until(lambda: not sim_calls(sim.url, "muducloud", "create-transcode")[0]["pending"], timeout=10,
               what="the orphaned create to land")
    [orphan] = sim_tasks(sim.url)
    expire_what_the_dead_worker_held(redis_client, locks.LOCK_PREFIX + transcode.LOCK_NAME + f"{video}:{rung}")
    second = workers.start(redis_client, **sections)
    try:
        wait_until(lambda: len(rung_states(redis_client, *VIDEOS)) == 6 and all(
            s.get("state") == "submitted" for s in rung_states(redis_client, *VIDEOS).values()),
            timeout=120, interval=0.2, what="every rung to have its task after the restart")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{second.output()}") from None

    assert_one_task_per_rung(sim.url, redis_client, *VIDEOS)
    assert rung_states(redis_client, *VIDEOS)[(video, rung)]["task_id"] == orphan["id"]  # adopted
    assert len(sim_calls(sim.url, "muducloud", "create-transcode")) == 6  # never a second one for a rung
    assert actions.record(redis_client, killed["action_id"])["attempts"] == 2


# --- actions.enqueue_many queues what actions.enqueue would -------------------------------------

def _comparable(redis, action_id: str) -> tuple[dict, dict, float | None]:
    """An action's record (times left out), its job's stored call and options, its schedule."""
    doc = {k: v for k, v in actions.record(redis, action_id).items() if k not in ("created_at", "updated_at")}
    job = Job.fetch(actions.job_id(action_id), connection=redis)
    stored = {"func": job.func_name, "kwargs": {**job.kwargs, "action_id": "<id>"}, "status": job.get_status(),
              "origin": job.origin, "timeout": job.timeout, "description": job.description.replace(action_id, "<id>"),
              "meta": {**job.meta, "action_id": "<id>"}, "retries": job.retries_left, "result_ttl": job.result_ttl,
              "failure_ttl": job.failure_ttl, "intervals": len(job.retry_intervals or [])}
    due = Queue(ACTIONS_QUEUE, connection=redis).scheduled_job_registry.get_scheduled_time(job.id) \
        if job.get_status() == JobStatus.SCHEDULED else None
    return {**doc, "id": "<id>", "params": {**doc["params"], "action_id": "<id>"}}, stored, \
        due.timestamp() if due else None


@pytest.mark.parametrize("delay", [None, 600.0])
def test_enqueue_many_queues_what_enqueue_would(redis_client, delay):
    policy = HttpPolicy()
    params = {"video_id": "VQ", "rung": "360", "n": 1, "task_id": "t1"}
    t0 = time.time()
    assert actions.enqueue(redis_client, "one-by-one", actions.TRANSCODE_POLL, event_id="evt-1",
                           params={**params, "action_id": "one-by-one"}, policy=policy, delay=delay) == "queued"
    item = actions.ToQueue("batched", actions.TRANSCODE_POLL, {**params, "action_id": "batched"}, event_id="evt-1",
                           policy=policy, delay=delay)
    assert actions.enqueue_many(redis_client, [item]) == ["queued"]
    assert actions.enqueue_many(redis_client, [item]) == ["exists"]  # once: a repeat queues nothing

    (one_doc, one_job, one_due), (doc, job, due) = (_comparable(redis_client, a) for a in ("one-by-one", "batched"))
    assert doc == one_doc and job == one_job
    if delay:
        assert one_due and due and abs(due - one_due) <= 1 and due >= t0 + delay - 1
    else:
        assert Queue(ACTIONS_QUEUE, connection=redis_client).job_ids == [actions.job_id(a)
                                                                         for a in ("one-by-one", "batched")]
    assert {a["id"] for a in actions.event_actions(redis_client, "evt-1")} == {"one-by-one", "batched"}
    assert redis_client.ttl(actions.ACTION_PREFIX + "batched") > actions.ACTION_TTL - 60

"""Failures: transient ones are retried with backoff until the work is done exactly once,
permanent ones fail at once with the vendor's code and message (listed by `ops.failed_items`, run
again by `ops.replay`), and a worker SIGKILLed in the middle of a vendor call still ends right.
The simulators fail for real over HTTP; the Redis is real; the killed worker is a real process."""

from __future__ import annotations

import time

import pytest
from rq import Queue
from rq.scheduler import RQScheduler

from app.core.queues import QUEUES
from tests.conftest import ROOM, vendor_sections
from tests.helpers import fixture_bytes, wait_until
from tests.vendor_harness import (
    TEMPLATE_IDS,
    UPLOAD,
    Workers,
    applied_rates,
    converters,
    koophone_instance,
    origin,
    post_live,
    set_faults,
    sim_calls,
    sim_tasks,
    stream_event,
    upload_body,
)
from workers import actions, locks, ops, transcode

FIXTURE_VIDEOS = ("9B0F7BA8BCB9D056D4C24ADDBF821D10", "E869FC95F3C7493ED56E8751C4AA7BEE")
NORMAL = (2000, 4000, 8000)


def status(redis, action_id: str) -> str | None:
    return (actions.record(redis, action_id) or {}).get("status")


def rung_states(redis, *videos: str) -> dict[tuple[str, str], dict]:
    return {(v, r): s for v in videos for r, s in transcode.video_transcodes(redis, v).items()}


def all_succeeded(redis, expected: int, *videos: str):
    def check() -> bool:
        got = rung_states(redis, *videos)
        return len(got) == expected and all(s.get("state") == "success" for s in got.values())
    return check


def url_of(video: str) -> str:
    return f"https://ovptest.haplat.net/{video}.mp4" if video in FIXTURE_VIDEOS else origin(video)


def assert_one_task_per_rung(sim_url: str, redis, *videos: str) -> None:
    """The simulator holds exactly one task per video and rung, and it is the one recorded."""
    by_rung: dict[tuple[str, int], list[str]] = {}
    for task in sim_tasks(sim_url):
        by_rung.setdefault((task["origin_url"], task["task_config_temp_id"]), []).append(task["id"])
    states = rung_states(redis, *videos)
    assert sorted(by_rung) == sorted((url_of(v), TEMPLATE_IDS[r]) for v, r in states)
    for (video, rung), state in states.items():
        assert by_rung[(url_of(video), TEMPLATE_IDS[rung])] == [state["task_id"]], by_rung


@pytest.fixture
def workers(base_config, tmp_path):
    started = Workers(base_config, tmp_path)
    yield started
    started.stop_all()


def test_30_percent_5xx_and_timeouts_still_do_everything_once(make_app, sim, drive, redis_client):
    """Every vendor fails ~30 % of calls (15 % 5xx, 15 % timeouts), after doing the work
    (the answer is lost), and the very first transcode create loses its answer for sure."""
    sections = vendor_sections(sim.url)
    http = {"read_timeout": 0.25, "retry_attempts": 15}
    for name in ("transcoder", "flighthub", "koophone"):
        sections[name].update(http)
    client = make_app(**sections).test_client()
    rule = {"error_rate": 0.15, "timeout_rate": 0.15, "timeout_sleep_s": 0.5, "after_effect": True}
    set_faults(sim.url, {"muducloud": {**rule, "create-transcode": {"error_times": 1}},
                         "flighthub": rule, "koophone": rule}, seed=3)

    upload = client.post(UPLOAD, data=fixture_bytes("cdnetworks", "vod_upload.json")).json["event_id"]
    stream = post_live(client, stream_event(ROOM, "CONNECTED"))
    converter_action, koophone_action = f"converter-room-{ROOM}-{stream}", f"koophone-{stream}-0-0"
    drive(lambda: all_succeeded(redis_client, 6, *FIXTURE_VIDEOS)()
          and status(redis_client, converter_action) == "succeeded"
          and status(redis_client, koophone_action) == "succeeded",
          timeout=60, what="every action to succeed through the faults")

    assert_one_task_per_rung(sim.url, redis_client, *FIXTURE_VIDEOS)
    assert len(sim_tasks(sim.url)) == 6
    [made] = converters(sim.url)
    assert made["auto_push_stream"] is True
    assert all(applied_rates(koophone_instance(sim.url, p)) == {NORMAL} for p in ("phone-1", "phone-2"))
    assert ops.failed_items(redis_client) == []
    assert {a["status"] for a in ops.event_details(redis_client, upload)["action_states"]} == {"succeeded"}

    # The faults did fire, of both kinds, and a create's answer was lost.
    wait_until(lambda: not any(c["pending"] for c in sim_calls(sim.url, "muducloud")), what="sleeping calls")
    calls = sim_calls(sim.url, "muducloud") + sim_calls(sim.url, "flighthub") + sim_calls(sim.url, "koophone")
    kinds = [c["fault"]["kind"] for c in calls if c["fault"]]
    assert kinds.count("error") >= 2 and kinds.count("timeout") >= 1, kinds
    assert 0.1 <= len(kinds) / len(calls) <= 0.55, (len(kinds), len(calls))
    lost = [c for c in sim_calls(sim.url, "muducloud", "create-transcode") if c["fault"]]
    assert lost and all(c["fault"]["after_effect"] for c in lost)


def test_permanent_error_fails_at_once_then_replay_completes(vendor_app, sim, drive, redis_client):
    set_faults(sim.url, {"muducloud": {"create-transcode": {"vendor_errors": [
        {"times": 1, "code": 1001, "message": "origin_url cannot be fetched"}]}}})
    event = vendor_app.test_client().post(UPLOAD, data=upload_body(("VPERM", 720))).json["event_id"]
    drive(lambda: len(rung_states(redis_client, "VPERM")) == 3
          and {s["state"] for s in rung_states(redis_client, "VPERM").values()} == {"success", "failed"},
          what="two rungs done and one failed")

    [failed] = ops.failed_items(redis_client)
    assert failed["status"] == "failed" and failed["attempts"] == 1 and failed["event_id"] == event
    assert (failed["last_error"]["vendor"], failed["last_error"]["code"], failed["last_error"]["message"],
            failed["last_error"]["transient"]) == ("muducloud", 1001, "origin_url cannot be fetched", False)
    rung = failed["params"]["rung"]
    assert transcode.video_transcodes(redis_client, "VPERM")[rung]["error"] == "1001: origin_url cannot be fetched"
    assert len(sim_calls(sim.url, "muducloud", "create-transcode")) == 3  # not retried

    ops.replay(redis_client, event)  # the fault is used up: the replay completes the rung
    drive(all_succeeded(redis_client, 3, "VPERM"), what="the replayed rung to succeed")
    assert ops.failed_items(redis_client) == []
    assert status(redis_client, failed["id"]) == "succeeded"
    assert_one_task_per_rung(sim.url, redis_client, "VPERM")
    assert len(sim_calls(sim.url, "muducloud", "create-transcode")) == 4


def test_permanent_flighthub_error_is_listed_with_its_code(make_app, sim, drive, redis_client):
    sections = vendor_sections(sim.url)
    sections["flighthub"]["bindings"] = [{"room_id": ROOM, "converter_id": "3f1a0c1e-0000-4000-8000-deadbeef0000"}]
    event = post_live(make_app(**sections).test_client(), stream_event(ROOM, "CONNECTED"))
    drive(lambda: ops.failed_items(redis_client), what="the reconcile to fail")
    [failed] = ops.failed_items(redis_client)
    assert failed["id"] == f"converter-room-{ROOM}-{event}" and failed["attempts"] == 1
    assert (failed["last_error"]["code"], failed["last_error"]["message"]) == (213029, "converter not found")
    assert len(sim_calls(sim.url, "flighthub", "update")) == 1


def test_transient_errors_until_the_retries_run_out_end_failed(make_app, sim, drive, redis_client):
    sections = vendor_sections(sim.url)
    sections["koophone"]["retry_attempts"] = 2
    make_app(**sections)
    from workers.context import settings as worker_settings

    set_faults(sim.url, {"koophone": {"error_times": 5}})
    [action_id] = ops.koophone_apply(redis_client, worker_settings(), "low", ["k1"])
    drive(lambda: status(redis_client, action_id) == "failed", what="the retries to run out")
    record = actions.record(redis_client, action_id)
    assert record["attempts"] == 3
    assert (record["last_error"]["code"], record["last_error"]["transient"]) == ("KOOPHONE.API.9999", True)
    assert len(sim_calls(sim.url, "koophone")) == 3
    assert [a["id"] for a in ops.failed_items(redis_client)] == [action_id]

    set_faults(sim.url, {"koophone": {"vendor_errors": [{"times": 2, "code": "KOOPHONE.API.9999",
                                                          "message": "internal error", "status": 400}]}})
    [retried] = ops.koophone_apply(redis_client, worker_settings(), "low", ["k2"])
    drive(lambda: status(redis_client, retried) == "succeeded", what="the vendor's internal error to be retried")
    assert actions.record(redis_client, retried)["attempts"] == 3


def test_retry_after_is_honoured(vendor_app, sim, drive, redis_client):
    """The retry interval is a few ms here; a 429 with Retry-After: 1 must hold the retry back ≥ 1 s."""
    set_faults(sim.url, {"muducloud": {"create-transcode": {"times_429": 1, "retry_after_s": 1}}})
    vendor_app.test_client().post(UPLOAD, data=upload_body(("V429", 360)))
    drive(all_succeeded(redis_client, 1, "V429"), what="the rung to succeed")
    first, second = sim_calls(sim.url, "muducloud", "create-transcode")
    assert first["answer"]["status"] == 429 and second["answer"]["status"] == 200
    assert second["time"] - first["time"] >= 0.95
    assert len(sim_tasks(sim.url)) == 1


# --- a worker SIGKILLed in the middle of a vendor call ------------------------------------

def expire_what_the_dead_worker_held(redis, lock_key: str) -> None:
    """Fast-forward what waiting would do after a worker dies, without the wait.

    RQ gives up a job only once its heartbeat entry in the StartedJobRegistry expires (the
    worker's job_monitoring_interval, 30 s by default, + a fixed 60 s) and a worker then cleans
    the registries; the dead scheduler's lock lasts 61 s; the rung's lock (workers/locks.py) has
    a short TTL that only a live holder renews. Each is checked to be one of those bounded TTLs, and the rung
    lock to expire before RQ gives the job up (so the retry never waits on it), then expired.
    """
    # The killed job, still "started": the action's own job, or the event job running its first attempt.
    [(wip, entries)] = [(key, found) for key in (Queue(q, connection=redis).started_job_registry.key for q in QUEUES)
                        if (found := redis.zrange(key, 0, -1, withscores=True))]
    assert len(entries) == 1, entries
    gives_up_in = entries[0][1] - time.time()
    assert 0 < gives_up_in <= 30 + 60 + 1
    assert 0 < redis.pttl(lock_key) / 1000 < gives_up_in
    redis.zadd(wip, {entries[0][0]: time.time() - 1}, xx=True)
    redis.delete(lock_key)
    for queue in QUEUES:
        key = RQScheduler.get_locking_key(queue)
        assert redis.ttl(key) in (-2, *range(0, 62))
        redis.delete(key)


def test_worker_killed_mid_create_still_ends_with_one_task_per_rung(make_app, sim, redis_client, workers):
    """A real `mediahook worker` is SIGKILLed (with its work horse and scheduler) while its
    create call is in flight; Muducloud still creates the task. Once RQ gives the job up, another
    worker retries it and must adopt that task, not create a second one.

    The ~90 s RQ waits is fast-forwarded (see expire_what_the_dead_worker_held). In production a
    worker restarted at once would only clean the registries, and take the scheduler over, at
    its next maintenance run: `rq worker`'s default maintenance interval is 10 minutes, and
    `mediahook worker` does not set it.
    """
    sections = vendor_sections(sim.url)
    sections["transcoder"]["read_timeout"] = 5.0
    sections["transcoder"]["ladder"] = ["480"]  # one create in flight, whatever the worker's number of processes
    client = make_app(**sections).test_client()
    set_faults(sim.url, {"muducloud": {"create-transcode": {"latency_ms": 1500}}})
    first = workers.start(redis_client, **sections)

    client.post(UPLOAD, data=upload_body(("VKILL", 480)))
    wait_until(lambda: any(c["pending"] for c in sim_calls(sim.url, "muducloud", "create-transcode")), timeout=20,
               what="a create to be in flight")
    first.kill()  # worker, work horse and scheduler: SIGKILL, mid-call

    [in_flight] = sim_calls(sim.url, "muducloud", "create-transcode")
    rung = next(r for r, t in TEMPLATE_IDS.items() if t == in_flight["body"]["task_config_temp_id"])
    action_id = f"transcode-VKILL-{rung}"
    state = transcode.video_transcodes(redis_client, "VKILL")[rung]
    assert state["state"] == "creating" and "task_id" not in state  # died between "create" and "record the id"
    assert status(redis_client, action_id) == "running"

    # Muducloud still creates the task: it never learns that its caller died.
    set_faults(sim.url, {})
    wait_until(lambda: not sim_calls(sim.url, "muducloud", "create-transcode")[0]["pending"], timeout=10,
               what="the orphaned create to land")
    [orphan] = sim_tasks(sim.url)
    assert transcode.video_transcodes(redis_client, "VKILL")[rung]["state"] == "creating"  # nobody recorded it

    expire_what_the_dead_worker_held(redis_client, locks.LOCK_PREFIX + transcode.LOCK_NAME + f"VKILL:{rung}")
    second = workers.start(redis_client, **sections)
    try:
        wait_until(all_succeeded(redis_client, 1, "VKILL"), timeout=45, interval=0.1,
                   what="the rung to succeed after the restart")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{second.output()}") from None

    assert_one_task_per_rung(sim.url, redis_client, "VKILL")
    assert transcode.video_transcodes(redis_client, "VKILL")[rung]["task_id"] == orphan["id"]  # adopted
    assert len(sim_calls(sim.url, "muducloud", "create-transcode")) == 1  # the orphan's, never a second
    record = actions.record(redis_client, action_id)
    assert (record["status"], record["attempts"]) == ("succeeded", 2)

"""Live streams end in the state of their true latest state: transitions are never dropped,
states are ordered by the vendor's signed time (not by arrival), a room follows its current job
only, and a reconcile converges on the last state that means something to its binding.
Effects are read back from the simulators (converter history, phones' applied settings)."""

from __future__ import annotations

import time

from tests.conftest import ROOM
from tests.helpers import live_event
from tests.vendor_harness import (
    applied_rates,
    converter,
    koophone_instance,
    post_signed,
    sim_calls,
    stream_event,
)
from workers import actions, ops, streams, timeline
from workers.converter import CREATED_PREFIX

LOW, NORMAL = (1000, 1500, 2000), (2000, 4000, 8000)
EVENTS_LIST = "rq:queue:mediahook-events"
ACTIONS_LIST = "rq:queue:mediahook-actions"


def idle(redis) -> bool:
    return redis.llen(EVENTS_LIST) == 0 and redis.llen(ACTIONS_LIST) == 0 and all(
        a.get("status") in ("succeeded", "skipped", "failed")
        for a in (actions.record(redis, m.decode().split(":", 2)[2]) for m in redis.keys("mh:action:*")) if a)


def converter_now(sim_url: str, redis) -> dict:
    return converter(sim_url, redis.get(CREATED_PREFIX + f"room-{ROOM}").decode())


def test_connected_disconnected_connected_ends_on_and_normal(vendor_app, sim, drive, redis_client):
    client = vendor_app.test_client()
    t = time.time() - 10
    for n, state in enumerate(["CONNECTED", "DISCONNECTED", "CONNECTED"]):
        post_signed(client, stream_event(ROOM, state), t + n)
    drive(lambda: idle(redis_client), what="the events and their reconciles")
    conv = converter_now(sim.url, redis_client)
    assert conv["auto_push_stream"] is True
    assert [h["auto_push_stream"] for h in conv["history"]][-1] is True
    assert applied_rates(koophone_instance(sim.url, "phone-1")) == {NORMAL}


def test_script_switches_1_2_1_leave_the_timeline_on_1(vendor_app, drive, redis_client):
    client = vendor_app.test_client()
    t = time.time() - 10
    for n, no in enumerate(["1", "2", "1"]):
        post_signed(client, live_event("SHOOT_SCRIPT_SWITCH", room_id=ROOM, job_id="job-1", scene_script_name="S",
                                   shoot_script_sequence_no=no, shoot_script_title=f"P{no}"), t + n)
    drive(lambda: redis_client.llen(EVENTS_LIST) == 0, what="the switches")
    assert timeline.show(redis_client, "job-1")["shoot_script_sequence_no"] == "1"


def test_a_switch_signed_earlier_but_delivered_later_does_not_move_the_timeline(vendor_app, drive, redis_client):
    client = vendor_app.test_client()
    t = time.time()
    second = post_signed(client, live_event("SHOOT_SCRIPT_SWITCH", room_id=ROOM, job_id="job-1",
                                        shoot_script_sequence_no="2"), t)
    first = post_signed(client, live_event("SHOOT_SCRIPT_SWITCH", room_id=ROOM, job_id="job-1",
                                       shoot_script_sequence_no="1"), t - 20)
    drive(lambda: redis_client.llen(EVENTS_LIST) == 0, what="the switches")
    shown = timeline.show(redis_client, "job-1")
    assert (shown["shoot_script_sequence_no"], shown["script_event_id"]) == ("2", second)
    assert ops.event_details(redis_client, first)["notes"] == [
        "a switch ordered after this one already moved the script timeline"]


def test_disconnected_signed_before_connected_but_delivered_after_stays_on(vendor_app, sim, drive, redis_client):
    client = vendor_app.test_client()
    t = time.time()
    post_signed(client, stream_event(ROOM, "CONNECTED"), t)
    late = post_signed(client, stream_event(ROOM, "DISCONNECTED"), t - 30)
    drive(lambda: idle(redis_client), what="both events and their reconciles")
    assert converter_now(sim.url, redis_client)["auto_push_stream"] is True
    assert streams.latest(redis_client, ROOM)["state"] == "CONNECTED"
    assert [h["state"] for h in streams.states(redis_client, ROOM)] == ["DISCONNECTED", "CONNECTED"]
    assert streams.states(redis_client, ROOM)[0]["event_id"] == late
    assert applied_rates(koophone_instance(sim.url, "phone-1")) == {NORMAL}


def test_previous_jobs_end_after_the_new_jobs_connected_moves_nothing(vendor_app, sim, drive, redis_client):
    """Job 1 runs, job 2 starts in the same room, then job 1's END and a RECONNECTING of it are
    delivered (signed even later): the converter stays on and the phones stay normal."""
    client = vendor_app.test_client()
    t = time.time() - 10
    post_signed(client, stream_event(ROOM, "CONNECTED", job_id="job-1"), t)
    post_signed(client, stream_event(ROOM, "CONNECTED", job_id="job-2"), t + 2)
    drive(lambda: idle(redis_client), what="both CONNECTED")
    calls_before = len(sim_calls(sim.url, "flighthub", "update")), len(sim_calls(sim.url, "koophone"))
    old_end = post_signed(client, stream_event(ROOM, "END", job_id="job-1"), t + 3)
    old_reconnecting = post_signed(client, stream_event(ROOM, "RECONNECTING", job_id="job-1"), t + 4)
    drive(lambda: idle(redis_client), what="the old job's events")

    assert converter_now(sim.url, redis_client)["auto_push_stream"] is True
    assert applied_rates(koophone_instance(sim.url, "phone-1")) == {NORMAL}
    assert (len(sim_calls(sim.url, "flighthub", "update")), len(sim_calls(sim.url, "koophone"))) == calls_before
    for event_id in (old_end, old_reconnecting):
        notes = ops.event_details(redis_client, event_id)["notes"]
        assert any("not the current job (job-2)" in n for n in notes), notes
    listed = {(s["job_id"], s["state"], s["current"]) for s in streams.list_streams(redis_client)}
    assert listed == {("job-1", "RECONNECTING", False), ("job-2", "CONNECTED", True)}
    assert [h["state"] for h in streams.stream_history(redis_client, ROOM, "job-1")] == [
        "CONNECTED", "END", "RECONNECTING"]


def test_connected_reconcile_after_a_later_reconnecting_switches_on(vendor_app, sim, drive, redis_client):
    """Both states are recorded before CONNECTED's reconcile runs: RECONNECTING implies nothing for
    the converter, so the reconcile converges on CONNECTED instead of skipping."""
    client = vendor_app.test_client()
    t = time.time() - 5
    connected = post_signed(client, stream_event(ROOM, "CONNECTED"), t)
    post_signed(client, stream_event(ROOM, "RECONNECTING"), t + 1)
    drive(lambda: idle(redis_client), what="both events and their actions")
    record = actions.record(redis_client, f"converter-room-{ROOM}-{connected}")
    assert record["status"] == "succeeded" and record["result"]["state"] == "CONNECTED"
    assert converter_now(sim.url, redis_client)["auto_push_stream"] is True
    assert applied_rates(koophone_instance(sim.url, "phone-1")) == {LOW}  # RECONNECTING names "low"


def test_a_repeated_state_makes_no_second_call(make_app, sim, drive, redis_client):
    """Auth NONE: the same CONNECTED delivered twice is two events, but one PUT each vendor."""
    from tests.conftest import vendor_sections
    from tests.helpers import LIVE_EVENTS, MS_TOKEN

    client = make_app(sources={"metastudio": {"auth_type": "NONE", "token": MS_TOKEN}},
                      **vendor_sections(sim.url)).test_client()
    ids = []
    for _ in range(2):
        r = client.post(f"{LIVE_EVENTS}?token={MS_TOKEN}", data=stream_event(ROOM, "CONNECTED"))
        assert r.status_code == 200, r.get_data(as_text=True)
        ids.append(r.json["event_id"])
    assert ids[0] != ids[1]
    drive(lambda: idle(redis_client), what="both events and their actions")
    assert len(sim_calls(sim.url, "flighthub", "update")) == 1
    assert len(sim_calls(sim.url, "koophone")) == 1
    assert actions.record(redis_client, f"converter-room-{ROOM}-{ids[1]}")["result"]["changed"] is False


# --- the stream store itself ----------------------------------------------------------------

def record(redis, event_id: str, state: str, received_at: float, sent_at: float | None = None,
           job_id: str = "job-1", output_url: str = "rtmp://a/1", room_id: str = ROOM) -> None:
    streams.record_state(redis, room_id=room_id, job_id=job_id, output_url=output_url, state=state,
                         event_id=event_id, received_at=received_at, sent_at=sent_at)


def test_order_is_signed_time_then_arrival(redis_client):
    record(redis_client, "e3", "DISCONNECTED", received_at=103.0, sent_at=100.0)  # signed first, delivered last
    record(redis_client, "e1", "CONNECTING", received_at=101.0, sent_at=101.0)
    record(redis_client, "e2", "CONNECTED", received_at=102.5, sent_at=101.0)  # same second: arrival decides
    record(redis_client, "e2", "CONNECTED", received_at=102.5, sent_at=101.0)  # a replay adds nothing
    assert [e["event_id"] for e in streams.states(redis_client, ROOM)] == ["e3", "e1", "e2"]
    assert streams.latest(redis_client, ROOM)["state"] == "CONNECTED"
    assert streams.target(streams.states(redis_client, ROOM), {"CONNECTED", "DISCONNECTED"})["event_id"] == "e2"


def test_streams_are_room_job_and_output(redis_client):
    record(redis_client, "a1", "CONNECTED", 100.0, output_url="rtmp://a/1")
    record(redis_client, "a2", "CONNECTED", 101.0, output_url="rtmp://a/2")
    record(redis_client, "a3", "DISCONNECTED", 102.0, output_url="rtmp://a/2")
    record(redis_client, "b1", "CONNECTING", 103.0, job_id="job-2")
    record(redis_client, "c1", "END", 104.0, room_id="other-room", job_id="job-9")
    listed = [(s["room_id"], s["job_id"], s["output_url"], s["state"], s["current"])
              for s in streams.list_streams(redis_client)]
    assert listed == [("other-room", "job-9", "rtmp://a/1", "END", True),
                      (ROOM, "job-2", "rtmp://a/1", "CONNECTING", True),
                      (ROOM, "job-1", "rtmp://a/2", "DISCONNECTED", False),
                      (ROOM, "job-1", "rtmp://a/1", "CONNECTED", False)]
    assert [e["event_id"] for e in streams.stream_history(redis_client, ROOM, "job-1")] == ["a1", "a2", "a3"]
    assert streams.list_streams(redis_client, limit=1)[0]["room_id"] == "other-room"
    # The new job implies nothing for a converter yet: nothing to converge on.
    assert streams.target(streams.states(redis_client, ROOM), {"CONNECTED", "DISCONNECTED", "END"}) is None

"""FlightHub converters follow their MetaStudio stream: CONNECTED → auto_push_stream on,
DISCONNECTED/END → off, other states leave it. Repeats and out-of-order events cannot leave it
wrong, and two reconciles of one stream never run at once. Checked in the simulator's own
records of the converter (its auto_push_stream history) and of the calls it received."""

from __future__ import annotations

import time

import pytest

from app.core.events import job_id_for
from app.core.queues import EVENTS_QUEUE
from app.core.vendor_config import FlightHubSchema
from tests.conftest import ROOM, vendor_sections
from tests.helpers import wait_until
from tests.vendor_harness import (
    Workers,
    converter,
    converters,
    post_live,
    post_signed,
    set_faults,
    sim_calls,
    stream_event,
)
from workers import actions, ops, streams
from workers.clients import flighthub
from workers.converter import CREATED_PREFIX, stream_ref

EVENTS_LIST = f"rq:queue:{EVENTS_QUEUE}"
DONE = ("succeeded", "failed", "skipped")


def action_id(event_id: str, binding: str = f"room-{ROOM}") -> str:
    return f"converter-{binding}-{event_id}"


def status(redis, action: str) -> str | None:
    return (actions.record(redis, action) or {}).get("status")


def created_id(redis) -> str | None:
    value = redis.get(CREATED_PREFIX + f"room-{ROOM}")
    return value.decode() if value else None


def history(sim_url: str, converter_id: str) -> list[bool]:
    return [h["auto_push_stream"] for h in converter(sim_url, converter_id)["history"]]


@pytest.fixture
def workers(base_config, tmp_path):
    started = Workers(base_config, tmp_path)
    yield started
    started.stop_all()


def test_created_on_first_use_then_switched_on_and_off(vendor_app, sim, drive, redis_client):
    client = vendor_app.test_client()
    on = post_live(client, stream_event(ROOM, "CONNECTED"))
    drive(lambda: status(redis_client, action_id(on)) == "succeeded", what="the reconcile for CONNECTED")
    converter_id = created_id(redis_client)
    assert converter_id and history(sim.url, converter_id) == [True]
    assert converter(sim.url, converter_id)["converter_name"] == "drone-1"
    assert actions.record(redis_client, action_id(on))["result"]["changed"] is True

    off = post_live(client, stream_event(ROOM, "END"))
    drive(lambda: status(redis_client, action_id(off)) == "succeeded", what="the reconcile for END")
    assert history(sim.url, converter_id) == [True, False]
    assert converter(sim.url, converter_id)["auto_push_stream"] is False
    assert len(sim_calls(sim.url, "flighthub", "create")) == 1 and len(converters(sim.url)) == 1

    again = post_live(client, stream_event(ROOM, "CONNECTED", job_id="job-2"))
    drive(lambda: status(redis_client, action_id(again)) == "succeeded", what="the reconcile for CONNECTED again")
    disconnected = post_live(client, stream_event(ROOM, "DISCONNECTED", job_id="job-2"))
    drive(lambda: status(redis_client, action_id(disconnected)) == "succeeded", what="the reconcile for DISCONNECTED")
    assert history(sim.url, converter_id) == [True, False, True, False]


def test_bindings_to_existing_converters_by_room_and_by_output_url(make_app, sim, drive, redis_client):
    sections = vendor_sections(sim.url)
    cfg = FlightHubSchema().load(sections["flighthub"])
    by_room = flighthub.create(cfg, "existing-1", "SN1", "39-0-7", "rtmp://push.example.com/one")
    by_url = flighthub.create(cfg, "existing-2", "SN2", "39-0-7", "rtmp://push.example.com/two")
    sections["flighthub"]["bindings"] = [{"room_id": ROOM, "converter_id": by_room},
                                         {"output_url": "rtmp://other.example.com/live", "converter_id": by_url}]
    client = make_app(**sections).test_client()
    first = post_live(client, stream_event(ROOM, "CONNECTED"))
    second = post_live(client, stream_event("another-room", "CONNECTED", output_url="rtmp://other.example.com/live"))
    url_binding = stream_ref(output_url="rtmp://other.example.com/live")
    drive(lambda: status(redis_client, action_id(first)) == "succeeded"
          and status(redis_client, action_id(second, url_binding)) == "succeeded", what="both reconciles")
    assert history(sim.url, by_room) == [True] and history(sim.url, by_url) == [True]
    assert len(sim_calls(sim.url, "flighthub", "create")) == 2  # only the test's own two
    assert len(converters(sim.url)) == 2


@pytest.mark.parametrize("state", ["CONNECTING", "RECONNECTING"])
def test_other_states_leave_the_converter_alone(vendor_app, sim, drive, redis_client, state):
    event = post_live(vendor_app.test_client(), stream_event(ROOM, state))
    drive(lambda: status(redis_client, action_id(event)) == "skipped", what="the reconcile to be skipped")
    assert state in actions.record(redis_client, action_id(event))["result"]["skipped"]
    assert sim_calls(sim.url, "flighthub") == []  # not even a list or a create


def test_repeated_connected_events_make_one_put(vendor_app, sim, drive, redis_client):
    client = vendor_app.test_client()
    first = post_live(client, stream_event(ROOM, "CONNECTED"))
    assert post_live(client, stream_event(ROOM, "CONNECTED")) == first  # an exact repeat: the same event
    second = post_live(client, stream_event(ROOM, "CONNECTED", job_id="job-restarted"))
    ops.replay(redis_client, first)
    drive(lambda: all(status(redis_client, action_id(e)) in DONE for e in (first, second)),
          what="both reconciles")
    drive(lambda: redis_client.llen(EVENTS_LIST) == 0, what="the replay")
    assert history(sim.url, created_id(redis_client)) == [True]
    assert len(sim_calls(sim.url, "flighthub", "update")) == 1
    assert len(sim_calls(sim.url, "flighthub", "create")) == 1


def test_end_processed_before_an_earlier_connected_leaves_it_off(vendor_app, sim, drive, redis_client):
    """CONNECTED then END arrive in that order, but the worker gets to END first (its job moved
    to the head of the real RQ list): the late CONNECTED must not switch the converter back on."""
    from rq import Queue, SimpleWorker

    client = vendor_app.test_client()
    connected = post_live(client, stream_event(ROOM, "CONNECTED"))
    ended = post_live(client, stream_event(ROOM, "END"))
    assert [j.decode() for j in redis_client.lrange(EVENTS_LIST, 0, -1)] == [job_id_for(connected),
                                                                            job_id_for(ended)]
    redis_client.lmove(EVENTS_LIST, EVENTS_LIST, "RIGHT", "LEFT")  # END's job to the head
    assert redis_client.lindex(EVENTS_LIST, 0).decode() == job_id_for(ended)

    # END's event job and its reconcile run to the end first, then CONNECTED's.
    events = Queue(EVENTS_QUEUE, connection=redis_client)
    SimpleWorker([events], connection=redis_client).work(burst=True, max_jobs=1, with_scheduler=False)
    drive(lambda: status(redis_client, action_id(ended)) == "succeeded", what="the reconcile for END")
    converter_id = created_id(redis_client)
    assert history(sim.url, converter_id) == [False]
    drive(lambda: status(redis_client, action_id(connected)) in DONE, what="the reconcile for CONNECTED")

    assert converter(sim.url, converter_id)["auto_push_stream"] is False
    assert history(sim.url, converter_id) == [False]  # never switched on
    assert streams.latest(redis_client, ROOM)["state"] == "END"
    assert [h["state"] for h in streams.states(redis_client, ROOM)] == ["CONNECTED", "END"]
    late = actions.record(redis_client, action_id(connected))["result"]
    assert (late["state"], late["auto_push_stream"], late["changed"]) == ("END", False, False)
    assert any("ordered after this one" in n for n in ops.event_details(redis_client, connected)["notes"])


def test_converter_create_answer_lost_makes_one_converter(vendor_app, sim, drive, redis_client):
    set_faults(sim.url, {"flighthub": {"create": {"drop_times": 1, "after_effect": True}}})
    event = post_live(vendor_app.test_client(), stream_event(ROOM, "CONNECTED"))
    drive(lambda: status(redis_client, action_id(event)) == "succeeded", what="the reconcile")
    members = converters(sim.url)
    assert len(members) == 1 and created_id(redis_client) == members[0]["converter_id"]
    assert members[0]["auto_push_stream"] is True
    assert len(sim_calls(sim.url, "flighthub", "create")) == 1  # found by name, not created again


def test_two_reconciles_of_one_stream_never_run_at_once(make_app, sim, redis_client, workers):
    """Two real worker processes; the first reconcile's PUT is slow (simulator latency) and END
    arrives meanwhile, so the second reconcile starts while the first is still running. The
    simulator must see the PUTs one after the other, never overlapping, and end on off."""
    sections = vendor_sections(sim.url)
    sections["flighthub"]["read_timeout"] = 3.0
    workers.start(redis_client, **sections)
    workers.start(redis_client, **sections)
    client = make_app(**sections).test_client()
    set_faults(sim.url, {"flighthub": {"update": {"latency_ms": 700}}})

    connected = post_live(client, stream_event(ROOM, "CONNECTED"))
    wait_until(lambda: any(c["pending"] for c in sim_calls(sim.url, "flighthub", "update")), timeout=20,
               what="the first PUT to be in flight")
    ended = post_live(client, stream_event(ROOM, "END"))
    ids = [action_id(connected), action_id(ended)]
    both_running = False

    def finished() -> bool:
        nonlocal both_running
        got = [status(redis_client, i) for i in ids]
        both_running = both_running or got == ["running", "running"]
        return all(s in DONE for s in got)

    wait_until(finished, timeout=30, interval=0.02, what="both reconciles to finish")
    assert both_running, "the two reconciles never overlapped: the test proved nothing"
    assert [status(redis_client, i) for i in ids] == ["succeeded", "succeeded"]

    puts = sim_calls(sim.url, "flighthub", "update")
    for before, after in zip(puts, puts[1:], strict=False):
        assert before["time"] + before["duration_ms"] / 1000 <= after["time"] + 0.005, (before, after)
    converter_id = created_id(redis_client)
    assert converter(sim.url, converter_id)["auto_push_stream"] is False
    assert history(sim.url, converter_id)[-1] is False


# --- convergence under lost answers, deletions and killed workers ---------------------------

def test_answer_lost_after_the_put_then_a_flip_back_before_the_retry_ends_matching(make_app, sim, drive,
                                                                                     redis_client):
    """END's PUT reaches FlightHub (off) but its answer is lost; CONNECTED arrives before END's
    retry. Our record of what was applied was never updated, so trusting it would skip the PUT
    for CONNECTED and leave the converter off while the stream is live."""
    sections = vendor_sections(sim.url)
    sections["flighthub"].update(retry_base_seconds=2.0, retry_max_seconds=2.0)  # the retry comes later
    client = make_app(**sections).test_client()
    t = time.time() - 10
    on = post_signed(client, stream_event(ROOM, "CONNECTED"), t)
    drive(lambda: status(redis_client, action_id(on)) == "succeeded", what="the converter to go on")
    converter_id = created_id(redis_client)

    set_faults(sim.url, {"flighthub": {"update": {"drop_times": 1, "after_effect": True}}})
    off = post_signed(client, stream_event(ROOM, "END"), t + 1)
    drive(lambda: status(redis_client, action_id(off)) == "retrying", what="END's PUT to lose its answer")
    assert converter(sim.url, converter_id)["auto_push_stream"] is False  # FlightHub did switch it off

    again = post_signed(client, stream_event(ROOM, "CONNECTED"), t + 2)
    drive(lambda: status(redis_client, action_id(again)) == "succeeded"
          and status(redis_client, action_id(off)) in DONE, what="CONNECTED's reconcile and END's retry")
    assert converter(sim.url, converter_id)["auto_push_stream"] is True
    assert history(sim.url, converter_id) == [True, False, True]
    assert actions.record(redis_client, action_id(off))["result"]["state"] == "CONNECTED"


def test_a_created_converter_deleted_at_flighthub_is_created_again(vendor_app, sim, drive, redis_client):
    client = vendor_app.test_client()
    t = time.time() - 10
    on = post_signed(client, stream_event(ROOM, "CONNECTED"), t)
    drive(lambda: status(redis_client, action_id(on)) == "succeeded", what="the converter to go on")
    first = created_id(redis_client)
    flighthub.delete(FlightHubSchema().load(vendor_sections(sim.url)["flighthub"]), first)

    off = post_signed(client, stream_event(ROOM, "END"), t + 1)
    drive(lambda: status(redis_client, action_id(off)) in DONE, what="the reconcile for END")
    assert status(redis_client, action_id(off)) == "succeeded"
    second = created_id(redis_client)
    assert second and second != first
    again = post_signed(client, stream_event(ROOM, "CONNECTED"), t + 2)
    drive(lambda: status(redis_client, action_id(again)) in DONE, what="the reconcile for CONNECTED")
    assert status(redis_client, action_id(again)) == "succeeded"
    [member] = converters(sim.url)
    assert (member["converter_id"], member["auto_push_stream"]) == (second, True)
    assert history(sim.url, second) == [False, True]
    assert len(sim_calls(sim.url, "flighthub", "create")) == 2


def test_a_fixed_converter_deleted_at_flighthub_fails_visibly_every_time(make_app, sim, drive, redis_client):
    """A binding to a given converter_id cannot re-create it: each reconcile fails for good with
    FlightHub's code, listed by `failed`, even one whose wanted value we had applied before."""
    sections = vendor_sections(sim.url)
    cfg = FlightHubSchema().load(sections["flighthub"])
    fixed = flighthub.create(cfg, "fixed-1", "SN9", "39-0-7", "rtmp://push.example.com/fixed")
    sections["flighthub"]["bindings"] = [{"room_id": ROOM, "converter_id": fixed}]
    client = make_app(**sections).test_client()
    t = time.time() - 10
    on = post_signed(client, stream_event(ROOM, "CONNECTED"), t)
    drive(lambda: status(redis_client, action_id(on)) == "succeeded", what="the converter to go on")
    flighthub.delete(cfg, fixed)

    off = post_signed(client, stream_event(ROOM, "END"), t + 1)
    drive(lambda: status(redis_client, action_id(off)) in DONE, what="the reconcile for END")
    # What we had applied (on) must not be trusted any more: CONNECTED calls and fails too.
    again = post_signed(client, stream_event(ROOM, "CONNECTED"), t + 2)
    ids = [action_id(off), action_id(again)]
    drive(lambda: all(status(redis_client, i) in DONE for i in ids), what="the reconcile for CONNECTED")
    assert [status(redis_client, i) for i in ids] == ["failed", "failed"]
    listed = {item["id"]: item for item in ops.failed_items(redis_client)}
    for i in ids:
        error = listed[i]["last_error"]
        assert (error["vendor"], error["code"], error["message"], error["transient"]) == (
            "flighthub", 213029, "converter not found", False)
        assert actions.record(redis_client, i)["attempts"] == 1


def test_a_killed_holders_lock_does_not_block_the_next_reconcile(make_app, sim, drive, redis_client, workers):
    """A real worker takes the lock for CONNECTED and is SIGKILLed inside its (hanging) PUT. The
    reconcile for END must get the lock within seconds, not after the old lock timeout."""
    sections = vendor_sections(sim.url)
    sections["flighthub"]["read_timeout"] = 5.0  # the old lock would have lived 4 × (1 + 5) + 30 = 54 s
    holder = workers.start(redis_client, **sections)
    client = make_app(**sections).test_client()
    set_faults(sim.url, {"flighthub": {"update": {"timeout_times": 1, "timeout_sleep_s": 8}}})
    t = time.time() - 10
    post_signed(client, stream_event(ROOM, "CONNECTED"), t)
    wait_until(lambda: any(c["pending"] for c in sim_calls(sim.url, "flighthub", "update")), timeout=20,
               what="the PUT to hang with the lock held")
    assert redis_client.exists(f"mh:lock:converter:room-{ROOM}")
    holder.kill()

    off = post_signed(client, stream_event(ROOM, "END"), t + 1)
    started = time.monotonic()
    drive(lambda: status(redis_client, action_id(off)) in DONE, timeout=40, what="the reconcile for END")
    waited = time.monotonic() - started
    assert status(redis_client, action_id(off)) == "succeeded"
    assert waited < 15, f"the next reconcile waited {waited:.1f} s for a dead holder's lock"
    assert converter(sim.url, created_id(redis_client))["auto_push_stream"] is False

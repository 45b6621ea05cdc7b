"""workers.locks.locked: a live holder keeps its lock as long as it works (renewed), a holder
killed with SIGKILL blocks others for at most the short TTL. Real Redis, a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from workers.locks import LOCK_PREFIX, Busy, locked

HOLDER = """
import sys, time
from redis import Redis
from workers.locks import locked
with locked(Redis.from_url(sys.argv[1]), sys.argv[2], wait=5, ttl=float(sys.argv[3])):
    print("held", flush=True)
    while True:
        time.sleep(60)
"""


@pytest.fixture
def holder(redis_server):
    procs = []

    def start(name: str, ttl: float) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, redis_server.url, name, str(ttl)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"  # blocks until the lock is taken
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_a_live_holder_keeps_the_lock_past_its_ttl(holder, redis_client):
    holder("live", ttl=1.0)
    started = time.monotonic()
    with pytest.raises(Busy):
        with locked(redis_client, "live", wait=2.5, ttl=1.0):
            pass
    assert time.monotonic() - started >= 2.0  # it waited, and the 1 s lock was renewed all along
    assert redis_client.exists(LOCK_PREFIX + "live")


def test_a_killed_holder_blocks_others_for_at_most_the_ttl(holder, redis_client):
    proc = holder("killed", ttl=2.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    started = time.monotonic()
    with locked(redis_client, "killed", wait=30, ttl=2.0):
        waited = time.monotonic() - started
    assert waited < 2.5, f"waited {waited:.1f} s for a dead holder"
    assert not redis_client.exists(LOCK_PREFIX + "killed")  # released on exit


def test_the_lock_is_released_when_the_body_raises(redis_client):
    with pytest.raises(ValueError):
        with locked(redis_client, "raises", wait=1):
            assert redis_client.exists(LOCK_PREFIX + "raises")
            raise ValueError("boom")
    assert not redis_client.exists(LOCK_PREFIX + "raises")


def test_an_action_that_finds_its_lock_held_is_retried_then_runs(make_app, sim, drive, redis_client):
    """Every action's lock is ``Run.locked`` (workers.actions): a reconcile that waits past its
    wait (two calls' time + 10 s) raises Busy, which is retried like any transient error (never
    failed for good while retries remain), and the next attempt, once the holder is done, runs."""
    from tests.conftest import ROOM, vendor_sections
    from tests.vendor_harness import post_live, sim_calls, stream_event
    from workers import actions, converter

    sections = vendor_sections(sim.url)
    # It waits 2 × 0.2 + 10 s for the lock; its retry comes 2 s later (scheduled, so seen "retrying").
    sections["flighthub"].update(connect_timeout=0.1, read_timeout=0.1, retry_base_seconds=2.0, retry_max_seconds=2.0)
    client = make_app(**sections).test_client()
    with locked(redis_client, converter.LOCK_NAME + f"room-{ROOM}", wait=1):
        event_id = post_live(client, stream_event(ROOM, "CONNECTED"))
        action_id = f"converter-room-{ROOM}-{event_id}"
        started = time.monotonic()
        drive(lambda: (actions.record(redis_client, action_id) or {}).get("status") == "retrying", timeout=30,
              what="the reconcile to give up waiting for the lock")
        assert time.monotonic() - started >= 10
        assert actions.record(redis_client, action_id)["last_error"]["code"] == "Busy"
        assert sim_calls(sim.url, "flighthub") == []  # nothing called without the lock
    drive(lambda: actions.record(redis_client, action_id)["status"] == "succeeded", timeout=30,
          what="the retry, once the lock is free")
    assert actions.record(redis_client, action_id)["attempts"] == 2
    assert len(sim_calls(sim.url, "flighthub", "update")) == 1


NESTED_HOLDER = """
import sys, threading, time
from redis import Redis
from workers.locks import locked
redis = Redis.from_url(sys.argv[1])
with locked(redis, "outer", wait=5, ttl=1.0), locked(redis, "inner", wait=5, ttl=0.6):
    renewers = [t for t in threading.enumerate() if t.name == "mediahook-lock-renewer"]
    print("held", len(renewers), flush=True)
    while True:
        time.sleep(60)
"""


def test_one_thread_renews_every_lock_a_process_holds(redis_server, redis_client):
    proc = subprocess.Popen([sys.executable, "-c", NESTED_HOLDER, redis_server.url], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().split() == ["held", "1"]  # two locks, one renewing thread
        for name, ttl in (("outer", 1.0), ("inner", 0.6)):
            started = time.monotonic()
            with pytest.raises(Busy):
                with locked(redis_client, name, wait=ttl * 2.5, ttl=ttl):
                    pass
            assert time.monotonic() - started >= ttl * 2  # both were renewed past their TTL all along
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    # Killed: neither lock outlives its TTL.
    with locked(redis_client, "outer", wait=3, ttl=1.0), locked(redis_client, "inner", wait=3, ttl=1.0):
        pass

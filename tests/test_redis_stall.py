"""A Redis that hangs (SIGSTOP) instead of refusing: callbacks are still answered at once
(spooled behind the circuit breaker), /readyz says not ready at once, and when Redis resumes
the spool drains with every acknowledged event recorded once and processed."""

from __future__ import annotations

import os
import signal
import threading
import time

import requests
from rq import Queue, SimpleWorker

from app.cli.embedded_redis import RedisServer
from app.core.breaker import Breaker, CircuitOpen
from app.core.queues import EVENTS_QUEUE
from app.web import spool
from tests.helpers import free_port, live_event, signed_path, wait_until

# Generous (the p99 is bench.ingest's figure): the old code took 6-8 s per callback and 4 s for
# /readyz with the default 2 s socket timeout, retried once.
ANSWER_BOUND = 2.0


def _event(n: int) -> bytes:
    return live_event("RTMP_STREAM_STATE_CHANGE", room_id=f"stall-room-{n}", job_id="job-1",
                      output_url="rtmp://push.example.com/live", stream_key="k", state="CONNECTED")


def test_a_hung_redis_costs_one_short_wait_then_callbacks_are_spooled(gunicorn_process, tmp_path):
    server = RedisServer(str(tmp_path / "stalled-redis"), port=free_port()).start()
    spool_dir = tmp_path / "stall-spool"
    stopped = False
    try:
        # The configured socket timeout is the default 2 s: the breaker's short ingest timeout
        # (the default 0.1 s, which the tests' base config raises) keeps the answers fast.
        gunicorn = gunicorn_process(redis={"url": server.url, "ingest_timeout": 0.1}, spool_dir=str(spool_dir))
        base, host = gunicorn.base, gunicorn.base[len("http://"):]
        acked: dict[int, str] = {}
        slow: list[str] = []
        errors: list[str] = []

        def post(n: int) -> None:
            t0 = time.monotonic()
            r = requests.post(base + signed_path(host=host), data=_event(n), timeout=15)
            took = time.monotonic() - t0
            if r.status_code != 200:
                errors.append(f"{n}: {r.status_code} {r.text}")
                return
            acked[n] = r.json()["event_id"]
            if took > ANSWER_BOUND:
                slow.append(f"{n}: {took:.2f} s")

        for n in range(5):
            post(n)
        assert len(acked) == 5 and not slow and not errors

        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        stopped = True

        def send(start: int) -> None:
            for n in range(start, start + 30, 3):
                post(n)

        senders = [threading.Thread(target=send, args=(100 + i,)) for i in range(3)]
        for t in senders:
            t.start()
        t0 = time.monotonic()
        ready = requests.get(base + "/readyz", timeout=15)
        readyz_took = time.monotonic() - t0
        for t in senders:
            t.join()
        assert ready.status_code == 503 and ready.json()["redis"] == "unreachable"
        assert readyz_took < ANSWER_BOUND, f"/readyz took {readyz_took:.2f} s"
        assert not errors, errors[:5]
        assert not slow, f"answers slower than {ANSWER_BOUND} s while Redis hung: {slow}"
        assert len(acked) == 5 + 30
        assert spool.depth(str(spool_dir)) > 0

        os.kill(server.process.pid, signal.SIGCONT)
        stopped = False
        wait_until(lambda: spool.depth(str(spool_dir)) == 0, timeout=30, what="the spool to drain")
        wait_until(lambda: requests.get(base + "/readyz", timeout=5).status_code == 200, what="/readyz ready again")

        redis = server.client()
        queue = Queue(EVENTS_QUEUE, connection=redis)
        job_ids = queue.job_ids
        assert len(job_ids) == len(set(job_ids)), "an event was queued twice"
        assert sorted(job_ids) == sorted(f"event-{i}" for i in acked.values())
        assert redis.zcard("mh:events") == len(acked), "an event was recorded twice"
        SimpleWorker([queue], connection=redis).work(burst=True, with_scheduler=False)
        assert {redis.hget(f"mh:event:{i}", "status") for i in acked.values()} == {b"processed"}
    finally:
        if stopped and server.process is not None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def test_the_breaker_fails_fast_while_open_and_its_probe_closes_it():
    answering = threading.Event()

    def probe() -> None:
        if not answering.is_set():
            raise TimeoutError("still hung")

    breaker = Breaker(probe, probe_seconds=0.01)
    breaker.check()  # closed: no error
    breaker.trip(TimeoutError())
    assert breaker.is_open
    try:
        breaker.check()
        raise AssertionError("an open breaker must refuse at once")
    except CircuitOpen:
        pass
    answering.set()
    wait_until(lambda: not breaker.is_open, timeout=5, what="the probe to close the breaker")
    breaker.check()
    breaker.trip(TimeoutError())  # opens again, with a new probe
    wait_until(lambda: not breaker.is_open, timeout=5, what="the second probe to close it")

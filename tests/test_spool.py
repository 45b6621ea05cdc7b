"""Redis down: callbacks are spooled to disk, still answered 200, and drained into Redis once it
is back, each exactly once."""

from __future__ import annotations

import os
import shutil
import threading

import pytest
import requests
from rq import Queue

from app.cli.embedded_redis import RedisServer
from app.core.events import read_event
from app.core.queues import EVENTS_QUEUE
from app.web import spool
from tests.helpers import free_port, live_event, signed_path, wait_until


def _event(n: int) -> bytes:
    return live_event("RTMP_STREAM_STATE_CHANGE", room_id=f"room-{n}", job_id="job-1",
                      output_url="rtmp://push.example.com/live", stream_key="k", state="CONNECTED")


@pytest.fixture
def down_redis(tmp_path):
    """A Redis that is not running yet (its port is free); start() brings it up."""
    server = RedisServer(str(tmp_path / "late-redis"), port=free_port())
    yield server
    server.stop()


def test_redis_down_spools_and_drains_when_back(make_app, down_redis, tmp_path):
    app = make_app(start_drainer=True, redis={"url": down_redis.url, "connect_timeout": 0.2, "socket_timeout": 0.5})
    client = app.test_client()
    spool_dir = app.extensions["mediahook"].settings.spool_dir
    ids = []
    for n in range(3):
        r = client.post(signed_path(), data=_event(n))
        assert r.status_code == 200 and r.json["code"] == 0
        ids.append(r.json["event_id"])
    assert spool.depth(spool_dir) == 3

    down_redis.start()  # no new traffic: the drainer notices on its own
    wait_until(lambda: spool.depth(spool_dir) == 0, what="the spool to drain")
    redis = down_redis.client()
    assert Queue(EVENTS_QUEUE, connection=redis).job_ids == [f"event-{i}" for i in ids]
    store = app.extensions["mediahook"].store
    assert [read_event(store.redis, i)["status"] for i in ids] == ["queued"] * 3


def test_dedup_still_applies_to_spooled_events(make_app, down_redis):
    app = make_app(start_drainer=True, redis={"url": down_redis.url, "connect_timeout": 0.2})
    client = app.test_client()
    spool_dir = app.extensions["mediahook"].settings.spool_dir
    path = signed_path()  # one signed request, delivered three times
    ids = []
    for _ in range(3):
        r = client.post(path, data=_event(1))
        assert r.status_code == 200
        ids.append(r.json["event_id"])
    down_redis.start()
    wait_until(lambda: spool.depth(spool_dir) == 0, what="the spool to drain")
    assert Queue(EVENTS_QUEUE, connection=down_redis.client()).job_ids == [f"event-{ids[0]}"]
    # Each answer named its own id: the duplicates stay findable under it, and say of what.
    store = app.extensions["mediahook"].store
    assert [(read_event(store.redis, i)["status"], read_event(store.redis, i).get("duplicate_of")) for i in ids] == [
        ("queued", None), ("duplicate", ids[0]), ("duplicate", ids[0])]


def test_a_spool_file_drained_twice_is_recorded_once(make_app, redis_client, tmp_path):
    """A crash between the Redis write and the unlink leaves the file behind: the next pass
    must see the event already recorded, even after the dedup window."""
    app = make_app()
    runtime = app.extensions["mediahook"]
    r = app.test_client().post(signed_path(), data=_event(1))
    record = read_event(runtime.store.redis, r.json["event_id"])
    from app.core.events import Event

    again = Event(id=record["id"], source=record["source"], endpoint=record["endpoint"], type=record["type"],
                  status="queued", received_at=float(record["received_at"]), body=record["body"],
                  headers=record["headers"], refs=record["refs"], remote_addr="", dedup=record["dedup"])
    for key in redis_client.scan_iter("mh:dedup:*"):
        redis_client.delete(key)
    spool.write(runtime.settings.spool_dir, again)
    assert spool.drain_once(runtime.settings.spool_dir, runtime.store) == 1
    assert spool.depth(runtime.settings.spool_dir) == 0
    assert Queue(EVENTS_QUEUE, connection=redis_client).count == 1


def test_spool_write_is_atomic_and_readable(tmp_path):
    from app.core.events import Event

    event = Event(id="0001", source="metastudio", endpoint="live-events", type="X", status="ignored",
                  received_at=1.5, body=b"\x00\xffbody", headers={"A": "b"}, refs={}, remote_addr="1.2.3.4",
                  dedup="d")
    spool.write(str(tmp_path), event)
    assert [e for e in os.listdir(tmp_path) if e.startswith(spool.TMP_PREFIX)] == []
    assert spool.read(spool.pending(str(tmp_path))[0]) == event


def test_unreadable_spool_file_is_moved_aside_not_dropped(make_app):
    app = make_app()
    runtime = app.extensions["mediahook"]
    bad = os.path.join(runtime.settings.spool_dir, "0002" + spool.SUFFIX)
    with open(bad, "w") as fh:
        fh.write("{not json")
    spool.drain_once(runtime.settings.spool_dir, runtime.store)
    assert os.path.exists(bad + ".bad")
    assert spool.depth(runtime.settings.spool_dir) == 0


def test_neither_redis_nor_spool_is_503(make_app, down_redis):
    app = make_app(redis={"url": down_redis.url, "connect_timeout": 0.2})
    spool_dir = app.extensions["mediahook"].settings.spool_dir
    shutil.rmtree(spool_dir)
    with open(spool_dir, "w") as fh:  # a file where the folder should be: every write fails
        fh.write("x")
    r = app.test_client().post(signed_path(), data=_event(1))
    assert r.status_code == 503
    assert r.json["code"] == 503 and "retry" in r.json["message"]


def test_readyz_reports_redis_and_spool_depth(make_app, down_redis):
    app = make_app(redis={"url": down_redis.url, "connect_timeout": 0.2})
    client = app.test_client()
    client.post(signed_path(), data=_event(1))
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json == {"status": "unready", "redis": "unreachable", "spool_depth": 1}
    assert client.get("/healthz").status_code == 200
    down_redis.start()
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json["status"] == "ready" and r.json["redis"] == "ok"


@pytest.mark.slow
def test_redis_killed_mid_run_every_acknowledged_event_queued_exactly_once(gunicorn_server, tmp_path):
    """SIGKILL the Redis server while callbacks stream in through real gunicorn; restart it.
    Every callback answered 200 ends up recorded and queued exactly once, then processed."""
    server = RedisServer(str(tmp_path / "victim-redis"), port=free_port()).start()
    spool_dir = tmp_path / "victim-spool"
    try:
        base = gunicorn_server(redis={"url": server.url, "connect_timeout": 0.2, "socket_timeout": 0.5},
                               spool_dir=str(spool_dir))
        host = base[len("http://"):]
        acked: dict[int, str] = {}
        stop = threading.Event()
        errors: list[str] = []

        def send(start: int, step: int) -> None:
            n = start
            while not stop.is_set() and n < 4000:
                r = requests.post(base + signed_path(host=host), data=_event(n), timeout=10)
                if r.status_code == 200:
                    acked[n] = r.json()["event_id"]
                else:
                    errors.append(f"{n}: {r.status_code} {r.text}")
                n += step

        senders = [threading.Thread(target=send, args=(i, 3)) for i in range(3)]
        for t in senders:
            t.start()
        wait_until(lambda: len(acked) >= 60, what="callbacks before the kill")
        server.kill()
        at_kill = len(acked)
        wait_until(lambda: spool.depth(str(spool_dir)) >= 30 and len(acked) >= at_kill + 30,
                   what="callbacks spooled while Redis is down")
        server.start()
        wait_until(lambda: len(acked) >= at_kill + 120, what="callbacks after the restart")
        stop.set()
        for t in senders:
            t.join()
        assert not errors, errors[:5]
        wait_until(lambda: spool.depth(str(spool_dir)) == 0, what="the spool to drain")

        redis = server.client()
        queue = Queue(EVENTS_QUEUE, connection=redis)
        job_ids = queue.job_ids
        assert len(job_ids) == len(set(job_ids)), "a job was queued twice"
        assert sorted(job_ids) == sorted(f"event-{i}" for i in acked.values())
        assert all(redis.exists(f"mh:event:{i}") for i in acked.values())

        # And a worker processes every one of them.
        from rq import SimpleWorker

        SimpleWorker([queue], connection=redis).work(burst=True, with_scheduler=False)
        statuses = {redis.hget(f"mh:event:{i}", "status") for i in acked.values()}
        assert statuses == {b"processed"}
    finally:
        server.stop()

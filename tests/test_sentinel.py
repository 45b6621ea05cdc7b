"""Redis Sentinel: with a redis+sentinel:// URL the web side, its spool drainer and the worker
follow the master through a failover.

Real servers, started here: a master, a replica (--replicaof) and one Sentinel (quorum 1,
down-after 500 ms, failover-timeout 2 s); the URL also names a Sentinel that is not running,
so the client has to move on to the next one. The master is SIGKILLed, as a crash would.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from redis import Redis, RedisError
from rq import Queue, SimpleWorker, Worker

from app.cli.embedded_redis import RedisServer, server_binary
from app.core.config import ConfigError, build
from app.core.events import read_event
from app.core.queues import EVENTS_QUEUE, QUEUES
from app.core.redis import SentinelURL, connect, parse_sentinel_url
from app.web import spool
from tests.helpers import free_port, live_event, signed_path, wait_until
from tests.vendor_harness import WorkerProcess, Workers

SERVICE = "mediahook"


# --- the URL ------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("redis+sentinel://s1:26379,s2:26380/mediahook/2",
     SentinelURL((("s1", 26379), ("s2", 26380)), "mediahook", 2)),
    ("redis+sentinel://10.0.0.1,10.0.0.2,[fd00::3]:5000/main",
     SentinelURL((("10.0.0.1", 26379), ("10.0.0.2", 26379), ("fd00::3", 5000)), "main", 0)),
    ("redis+sentinel://:p%40ss@s1/main/0",
     SentinelURL((("s1", 26379),), "main", 0, password="p@ss")),
    ("redis+sentinel://app:pw@s1:26379/main/1",
     SentinelURL((("s1", 26379),), "main", 1, username="app", password="pw")),
])
def test_sentinel_url_forms(url, expected):
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize("url", [
    "redis+sentinel://s1:26379",                 # no service name
    "redis+sentinel://s1:26379/",
    "redis+sentinel://s1:26379/main/x",          # db not a number
    "redis+sentinel://s1:26379/main/0/extra",
    "redis+sentinel://s1:port/main",
    "redis+sentinel://s1:26379,/main",           # an empty host
    "redis+sentinel://s1/main?sentinel_password=x",  # no parameters (they would be shown unmasked)
])
def test_a_bad_sentinel_url_names_the_key_and_the_form(url):
    with pytest.raises(ConfigError, match=r"redis\.url: .*expected redis\+sentinel://"):
        connect(build({"redis": {"url": url}}, env={}))


def test_the_password_stays_out_of_repr():
    assert "secret" not in repr(parse_sentinel_url("redis+sentinel://:secret@s1/main"))


@pytest.mark.parametrize("url, keepalive", [("redis://10.0.0.1:6379/0", True), ("unix:///run/redis.sock?db=0", False),
                                             ("redis+sentinel://s1/main", True)])
def test_tcp_connections_are_kept_alive(url, keepalive):
    """A worker waits minutes in BLPOP: keepalive finds a master whose host vanished."""
    kwargs = connect(build({"redis": {"url": url}}, env={})).connection_pool.connection_kwargs
    assert bool(kwargs.get("socket_keepalive")) is keepalive


# --- a master, a replica and a Sentinel ---------------------------------------------------------

@dataclass
class SentinelSet:
    """One master, one replica of it and one Sentinel watching them, on free 127.0.0.1 ports."""

    root: Path
    master: RedisServer
    replica: RedisServer
    sentinel_port: int
    sentinel: subprocess.Popen | None = None

    @classmethod
    def start(cls, root: Path) -> SentinelSet:
        master = RedisServer(str(root / "master"), port=free_port()).start()
        replica = RedisServer(str(root / "replica"), port=free_port(),
                              extra_args=("--replicaof", "127.0.0.1", str(master.port))).start()
        cluster = cls(root, master, replica, free_port())
        (root / "sentinel").mkdir()
        conf = root / "sentinel" / "sentinel.conf"  # Sentinel rewrites its own config: a copy of ours
        conf.write_text("\n".join([
            f"port {cluster.sentinel_port}", "bind 127.0.0.1", "daemonize no", f"dir {root / 'sentinel'}",
            f"logfile {root / 'sentinel' / 'sentinel.log'}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1",
            f"sentinel down-after-milliseconds {SERVICE} 500",
            f"sentinel failover-timeout {SERVICE} 2000", ""]))
        cluster.sentinel = subprocess.Popen([server_binary(), str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True)
        wait_until(cluster._watching_both, timeout=15, interval=0.05, what="the Sentinel to see master and replica")
        return cluster

    @property
    def url(self) -> str:
        # The first Sentinel named is not running: clients must move on to the next one.
        return f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{self.sentinel_port}/{SERVICE}/0"

    def sentinel_client(self) -> Redis:
        return Redis(port=self.sentinel_port, socket_timeout=1, socket_connect_timeout=1)

    def master_port(self) -> int:
        with self.sentinel_client() as client:
            return int(client.sentinel_get_master_addr_by_name(SERVICE)[1])

    def _watching_both(self) -> bool:
        try:
            with self.sentinel_client() as client:
                replicas = client.sentinel_slaves(SERVICE)
        except Exception:  # not up yet, or not monitoring yet
            return False
        return any(r["port"] == self.replica.port and not r["is_sdown"] and r["master-link-status"] == "ok"
                   for r in replicas)

    def in_sync(self) -> bool:
        """The replica has everything the master wrote."""
        offset = self.master.client().info("replication")["master_repl_offset"]
        return self.replica.client().info("replication").get("slave_repl_offset") == offset

    def fail_over(self) -> float:
        """SIGKILL the master; wait until the Sentinel names the replica. Returns the seconds taken."""
        self.master.kill()
        return self.wait_for_failover()

    def wait_for_failover(self) -> float:
        """Wait (after the master's death) until the Sentinel names the replica; the seconds it took."""
        started = time.monotonic()
        wait_until(lambda: self.master_port() == self.replica.port, timeout=20, interval=0.05,
                   what="the Sentinel to promote the replica")
        return time.monotonic() - started

    def stop(self) -> None:
        if self.sentinel and self.sentinel.poll() is None:
            self.sentinel.kill()
            self.sentinel.wait()
        self.master.stop()
        self.replica.stop()


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    cluster = SentinelSet.start(tmp_path / "sentinel-set")
    yield cluster
    cluster.stop()


def _sentinel_redis(cluster: SentinelSet) -> dict:
    return {"url": cluster.url, "connect_timeout": 0.2, "socket_timeout": 0.5}


def test_connect_follows_the_master(settings_factory, sentinel_set):
    client = connect(settings_factory(redis=_sentinel_redis(sentinel_set)))
    client.set("before", "1")
    assert client.info("server")["tcp_port"] == sentinel_set.master.port
    wait_until(sentinel_set.in_sync, what="the replica to catch up")

    sentinel_set.fail_over()

    def on_new_master() -> bool:
        try:
            return client.info("server")["tcp_port"] == sentinel_set.replica.port
        except Exception:  # the switch is not visible to this client yet
            return False

    wait_until(on_new_master, timeout=10, what="the client to reach the new master")
    assert client.get("before") == b"1"
    client.set("after", "2")  # writable: a master, not a read-only replica
    assert sentinel_set.replica.client().get("after") == b"2"


# --- the web side, through real gunicorn --------------------------------------------------------

def _event(n: int) -> bytes:
    return live_event("RTMP_STREAM_STATE_CHANGE", room_id=f"room-{n}", job_id="job-1",
                      output_url="rtmp://push.example.com/live", stream_key="k", state="CONNECTED")


@pytest.mark.slow
def test_web_keeps_taking_callbacks_through_a_failover(gunicorn_server, sentinel_set, settings_factory, tmp_path):
    """Callbacks stream in through real gunicorn while the master is SIGKILLed. During the
    switch they are spooled (still 200); after it, they go to the new master, and the spool
    drains there. Every acknowledged event is recorded and queued exactly once, and a worker
    on the same sentinel URL processes them all.

    The senders pause for the instant of the kill, until the replica has every acknowledged
    write: Redis replicates asynchronously, so a write acknowledged in the last milliseconds
    before a master dies can be lost with it (seen once in ~50 runs without the pause; see
    docs/operations.md, "What a failover can lose"). Everything after the kill is as it comes.
    """
    spool_dir = tmp_path / "web-spool"
    redis_config = _sentinel_redis(sentinel_set)
    base = gunicorn_server(redis=redis_config, spool_dir=str(spool_dir))
    host = base[len("http://"):]
    acked: dict[int, str] = {}
    errors: list[str] = []
    stop, go = threading.Event(), threading.Event()
    go.set()
    paused = [threading.Event() for _ in range(3)]
    spooled: list[int] = []

    def send(k: int) -> None:
        n = k
        while not stop.is_set():
            if not go.is_set():
                paused[k].set()
                go.wait()
                paused[k].clear()
            r = requests.post(base + signed_path(host=host), data=_event(n), timeout=10)
            if r.status_code == 200:
                acked[n] = r.json()["event_id"]
            else:
                errors.append(f"{n}: {r.status_code} {r.text}")
            n += len(paused)

    def watch_spool() -> None:
        while not stop.is_set():
            spooled.append(spool.depth(str(spool_dir)))
            time.sleep(0.01)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(len(paused))]
    threads.append(threading.Thread(target=watch_spool))
    for t in threads:
        t.start()
    try:
        wait_until(lambda: len(acked) >= 60, what="callbacks before the kill")
        go.clear()
        wait_until(lambda: all(p.is_set() for p in paused), what="the senders to pause")
        wait_until(sentinel_set.in_sync, what="the replica to catch up")
        at_kill = len(acked)
        sentinel_set.master.kill()
        go.set()
        switch = sentinel_set.wait_for_failover()
        at_switch = len(acked)
        wait_until(lambda: len(acked) >= at_switch + 100, what="callbacks after the switch")
    finally:
        stop.set()
        go.set()
        for t in threads:
            t.join()
    assert not errors, errors[:5]
    assert max(spooled) > 0 and at_switch > at_kill, "no callback was taken while there was no master"
    wait_until(lambda: spool.depth(str(spool_dir)) == 0, timeout=20, what="the spool to drain into the new master")

    redis = sentinel_set.replica.client()  # the master now
    assert redis.info("replication")["role"] == "master"
    job_ids = Queue(EVENTS_QUEUE, connection=redis).job_ids
    assert len(job_ids) == len(set(job_ids)), "a job was queued twice"
    assert sorted(job_ids) == sorted(f"event-{i}" for i in acked.values()), "an acknowledged event is missing"
    assert redis.zcard("mh:events") == len(acked)
    print(f"{len(acked)} callbacks acknowledged, {at_switch - at_kill} of them during the {switch:.1f} s switch "
          f"(up to {max(spooled)} spooled at once)")

    worker_redis = connect(settings_factory(redis=redis_config))
    SimpleWorker([Queue(q, connection=worker_redis) for q in QUEUES], connection=worker_redis).work(
        burst=True, with_scheduler=False)
    assert {redis.hget(f"mh:event:{i}", "status") for i in acked.values()} == {b"processed"}


# --- the worker: a real `mediahook worker` ------------------------------------------------------

@pytest.mark.slow
def test_the_worker_follows_a_failover(make_app, base_config, sentinel_set, tmp_path):
    """A running `mediahook worker`, waiting on the queue when the master is SIGKILLed, goes on
    taking jobs from the new master: the same process, no restart. One started while there is
    no master (as systemd would restart one that exited) waits for it instead of exiting."""
    redis_config = _sentinel_redis(sentinel_set)
    app = make_app(start_drainer=True, redis=redis_config)
    client = app.test_client()
    store = app.extensions["mediahook"].store
    workers = Workers({**base_config, "redis": redis_config}, tmp_path)
    first = workers.start(store.redis)
    try:
        def post_and_wait(first_n: int) -> None:
            ids = [client.post(signed_path(), data=_event(n)).json["event_id"] for n in range(first_n, first_n + 3)]

            def processed() -> bool:
                try:
                    return all((read_event(store.redis, i) or {}).get("status") == "processed" for i in ids)
                except RedisError:  # right after the switch, a Sentinel may not vouch for the new master yet
                    return False

            wait_until(processed, timeout=20, what="the workers to process the events")

        post_and_wait(0)
        master = sentinel_set.master.client()
        # Blocked in BLPOP on the queue: where RQ retries a lost connection by itself.
        wait_until(lambda: any(c["cmd"] == "blpop" and "b" in c["flags"] for c in master.client_list()),
                   what="the worker to wait on the queue")
        wait_until(sentinel_set.in_sync, what="the replica to catch up")
        sentinel_set.master.kill()
        second = WorkerProcess(workers.config(), tmp_path / "worker-late.log")
        workers.started.append(second)
        switch = sentinel_set.wait_for_failover()

        started = time.monotonic()
        post_and_wait(100)
        print(f"the switch took {switch:.1f} s; the jobs were done {time.monotonic() - started:.1f} s after it")
        second.wait_registered(store.redis)
        assert first.proc.poll() is None, first.output()
        # Each `mediahook worker` is a pool: its job processes are the registered workers.
        registered = sorted(w.pid for w in Worker.all(connection=store.redis))
        assert registered == sorted(p for w in (first, second) for p in w.descendants() if p in registered)
        assert all(set(w.descendants()) & set(registered) for w in (first, second))
        assert store.redis.info("server")["tcp_port"] == sentinel_set.replica.port
    finally:
        workers.stop_all()
    for worker in workers.started:  # SIGTERM: a requested, warm shutdown
        assert worker.proc.returncode == 0, worker.output()

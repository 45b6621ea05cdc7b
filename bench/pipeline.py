"""Pipeline benchmark: events per second through the worker side, and the latency from a
callback received to the vendor call made, for the live path (stream state change → FlightHub
converter PUT), with the worker the Procfile runs (`mediahook worker`: RQ's forking worker
with the scheduler).

    python -m bench.pipeline                    # 400 events over 8 rooms, 1 worker process
    python -m bench.pipeline --events 1000 --rooms 20 --workers 2 --rate 50

What it starts (all on 127.0.0.1, all stopped on exit, Ctrl-C or error): its own redis-server,
the vendor simulators, gunicorn with deploy/gunicorn.conf.py, and N `mediahook worker`
processes. It posts signed RTMP_STREAM_STATE_CHANGE callbacks (CONNECTED / END alternating per
room, unique bodies) either as fast as the web side takes them or paced with --rate, then waits
until every event's reconcile action has finished.

Figures:
  * throughput: events fully processed (event job + reconcile job, converter PUT made) per
    second, from the first callback to the last action finished;
  * latency per event: the converter action's finish time (just after the PUT returned) minus
    the event's received time, p50/p99; with --rate below the throughput this is what a live
    show sees, at full speed it is mostly queueing;
  * the number of PUTs the simulator received (convergence skips a PUT when the converter is
    already in the wanted state, so it can be fewer than the events).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import requests

from app.embedded_redis import RedisServer
from app.sources.metastudio import signed_url
from simulators import serve
from tests.helpers import free_port, to_toml
from workers.actions import ACTION_PREFIX, EVENT_ACTIONS_PREFIX

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-metastudio-key-0123456789a"
LIVE_EVENTS = "/hooks/metastudio/live-events"


def write_config(tmp: Path, redis_url: str, sim_url: str, rooms: list[str]) -> Path:
    config = {
        "spool_dir": str(tmp / "spool"),
        "redis": {"url": redis_url},
        "sources": {"metastudio": {"auth_type": "MSS_A", "key": KEY, "tolerance_seconds": 3600}},
        "flighthub": {"base_url": sim_url, "user_token": "sim-flighthub-token", "retry_base_seconds": 1,
                      "retry_max_seconds": 5},
    }
    text = to_toml(config)
    for n, room in enumerate(rooms):
        text += (f'\n[[flighthub.bindings]]\nroom_id = "{room}"\ncreate = {{ converter_name = "bench-{n}", '
                 f'sn = "SN{n:04d}", camera_index = "39-0-7", url = "rtmp://127.0.0.1/live/bench-{n}" }}\n')
    path = tmp / "pipeline.toml"
    path.write_text(text)
    return path


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def body(room: str, n: int, state: str) -> bytes:
    msg = {"room_id": room, "job_id": f"bench-{n}", "output_url": "rtmp://live.example.com/app",
           "stream_key": "bench-key", "state": state}
    return json.dumps({"event_type": "RTMP_STREAM_STATE_CHANGE", "message": json.dumps(msg)}).encode()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def run(args: argparse.Namespace) -> int:
    rooms = [f"bench-room-{i:03d}" for i in range(args.rooms)]
    with tempfile.TemporaryDirectory(prefix="mediahook-pipeline-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        redis_server = RedisServer(str(tmp / "redis"), port=free_port()).start()
        stack.callback(redis_server.stop)
        sim = serve(config={"seed": 1})
        stack.callback(sim.stop)
        config = write_config(tmp, redis_server.url, sim.url, rooms)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAHOOK_", "REDIS_URL"))}
        env.update(MEDIAHOOK_CONFIG=str(config), WEB_CONCURRENCY="2")
        port = free_port()
        web = start([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                     "--bind", f"127.0.0.1:{port}", "app:create_app()"], env, tmp / "web.log")
        stack.callback(stop, web)
        for w in range(args.workers):
            worker = start([sys.executable, "-m", "app.cli", "worker", "--worker-class", args.worker_class], env,
                           tmp / f"worker-{w}.log")
            stack.callback(stop, worker)
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return requests.get(base + "/readyz", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(up, 30, "gunicorn")
        url = signed_url(base + LIVE_EVENTS, KEY)
        redis = redis_server.client()
        session = requests.Session()
        print(f"pipeline: {args.events} events over {args.rooms} rooms, {args.workers} {args.worker_class} "
              f"process(es), "
              f"{'as fast as accepted' if not args.rate else f'{args.rate:g}/s'}", flush=True)

        ids: list[str] = []
        t0 = time.monotonic()
        for n in range(args.events):
            room = rooms[n % len(rooms)]
            state = "CONNECTED" if (n // len(rooms)) % 2 == 0 else "END"
            r = session.post(url, data=body(room, n, state), timeout=10)
            r.raise_for_status()
            ids.append(r.json()["event_id"])
            if args.rate:
                ahead = t0 + (n + 1) / args.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        posted = time.monotonic() - t0

        def finished() -> bool:
            pipe = redis.pipeline()
            for event_id in ids:
                pipe.smembers(EVENT_ACTIONS_PREFIX + event_id)
            action_sets = pipe.execute()
            if any(not s for s in action_sets):
                return False
            pipe = redis.pipeline()
            for s in action_sets:
                for action_id in s:
                    pipe.hget(ACTION_PREFIX + action_id.decode(), "status")
            return all(st in (b"succeeded", b"skipped", b"failed") for st in pipe.execute())

        wait_for(finished, args.timeout, "every action to finish")
        elapsed = time.monotonic() - t0

        latencies, statuses = [], {}
        for event_id in ids:
            received = float(redis.hget(f"mh:event:{event_id}", "received_at"))
            for action_id in redis.smembers(EVENT_ACTIONS_PREFIX + event_id):
                status, done = redis.hmget(ACTION_PREFIX + action_id.decode(), "status", "updated_at")
                statuses[status.decode()] = statuses.get(status.decode(), 0) + 1
                latencies.append((float(done) - received) * 1000)
        puts = requests.get(f"{sim.url}/_sim/calls", params={"vendor": "flighthub", "endpoint": "update"},
                            timeout=10).json()["calls"]
        print(f"  posted {args.events} callbacks in {posted:.2f}s ({args.events / posted:.0f}/s accepted)")
        print(f"  processed end to end in {elapsed:.2f}s: {args.events / elapsed:.1f} events/s "
              f"(event job + converter reconcile each)")
        print(f"  received → converter call made: p50 {statistics.median(latencies):.1f} ms, "
              f"p99 {percentile(latencies, 99):.1f} ms, max {max(latencies):.1f} ms")
        print(f"  actions: {statuses}; converter PUTs at the simulator: {len(puts)}")
        return 0 if set(statuses) <= {"succeeded", "skipped"} else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=400)
    p.add_argument("--rooms", type=int, default=8, help="rooms (each bound to its own converter)")
    p.add_argument("--workers", type=int, default=1, help="`mediahook worker` processes (the Procfile runs 1)")
    p.add_argument("--worker-class", default="rq.Worker", help="passed to `mediahook worker` (default rq.Worker)")
    p.add_argument("--rate", type=float, default=0.0, help="callbacks per second (default: as fast as accepted)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the actions")
    args = p.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

"""Pipeline benchmark: events per second through the worker side, and the latency from a
callback received to the first vendor call made, for the live path (stream state change →
FlightHub converter PUT) and the upload path (CDNetworks VoD upload → one Muducloud create per
video and rung), with the worker the Procfile runs (`mediahook worker`: a pool of job processes),
next to RQ's own rate for no-op jobs measured in the same run.

    python -m bench.pipeline                      # per path: 1000 events at full speed + 500 paced at 50/s
    python -m bench.pipeline --path upload --skip-reference
    python -m bench.pipeline --worker-class rq.Worker --processes 1     # the old forking worker
    python -m bench.pipeline --events 2000 --rooms 20 --rate 30 --skip-reference

What it starts (all on 127.0.0.1, all stopped on exit, Ctrl-C or error): its own redis-server,
the vendor simulators (threads in this process), gunicorn with deploy/gunicorn.conf.py and 2
workers, and one `mediahook worker` (with --processes N; default: the number of cores). Per path
(--path live|upload|both) it posts, from one client, either signed RTMP_STREAM_STATE_CHANGE
callbacks (CONNECTED / END alternating per room, unique bodies) or CDNetworks upload callbacks
(tests/fixtures/cdnetworks/vod_upload.json with unique videoIds: 2 videos of height 768, so 3
rungs each of the default ladder), then waits until every action the events queued has finished:
the reconcile (the converter PUT made), or every transcode submit (the Muducloud create made).
Transcode polls are scheduled an hour out, so they stay out of the figures.

Figures:
  * RQ's reference: no-op jobs per second of `rq worker --burst --quiet` with the forking Worker
    and with SimpleWorker, as many processes as the pool has, timed from the first job started
    to the last one ended (so process start-up is not counted);
  * throughput: events fully processed (event job + reconcile, converter PUT made) per second,
    from the first callback to the last action finished, with the callbacks posted as fast as
    the web side takes them; the RQ jobs the worker ran (its processes' own counts: one per event
    when the event job makes the reconcile's first attempt, two when the reconcile is a job of its
    own), and the ratios to RQ's no-op rate in events and in jobs;
  * latency per event: its first action's finish time (just after the PUT or the create
    returned) minus the event's received time, p50/p99/max. At full speed it is mostly queueing;
    the paced run (--rate, default 50/s) is what a live show sees;
  * CPU ms per event of each process group: web (gunicorn), worker (pool and job processes),
    redis-server, and this process (the poster and the simulators): on a 2-core box they all
    share the cores, so the worker's figure is what would scale on a host of its own.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import requests
from redis import Redis
from rq import Queue, Worker

from app.cli.embedded_redis import RedisServer
from app.sources.base import TOKEN_PARAM
from app.sources.cdnetworks import UPLOAD_HOOK
from app.sources.metastudio import signed_url
from bench.ingest import cpu_seconds, load_average
from simulators import serve
from simulators.state import EXTENSION
from tests.helpers import free_port, to_toml
from workers.actions import ACTION_PREFIX, EVENT_ACTIONS_PREFIX
from workers.pool import default_processes

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-metastudio-key-0123456789a"
LIVE_EVENTS = "/hooks/metastudio/live-events"
CDN_TOKEN = "bench-cdnetworks-token-0123"
UPLOAD_TEMPLATE = json.loads((ROOT / "tests" / "fixtures" / "cdnetworks" / "vod_upload.json").read_text())
PATHS = ("live", "upload")
# Past every run: the first poll of a task created here would otherwise land in the measurement.
POLL_LATER_SECONDS = 3600.0
FINISHED = (b"succeeded", b"skipped", b"failed")  # an action's statuses that end it
NOOP_QUEUE = "bench-noop"
REFERENCE_CLASSES = ("rq.Worker", "rq.worker.SimpleWorker")
# The no-op of RQ's reference run: a function a forked work horse finds already imported (a job
# in a module of its own would cost every horse that module's imports).
NOOP_FUNC = "os.getpid"


def write_config(tmp: Path, redis_url: str, sim_url: str, rooms: list[str]) -> Path:
    config = {
        "spool_dir": str(tmp / "spool"),
        "redis": {"url": redis_url},
        "sources": {"metastudio": {"auth_type": "MSS_A", "key": KEY, "tolerance_seconds": 3600},
                    "cdnetworks": {"token": CDN_TOKEN}},
        "flighthub": {"base_url": sim_url, "user_token": "sim-flighthub-token", "retry_base_seconds": 1,
                      "retry_max_seconds": 5},
        "transcoder": {"base_url": sim_url, "retry_base_seconds": 1, "retry_max_seconds": 5,
                       "poll_initial_seconds": POLL_LATER_SECONDS, "poll_max_seconds": POLL_LATER_SECONDS},
        "logging": {"level": "INFO"},  # what production runs: the cost of the log lines counts
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
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it (a worker pool, its job processes, their schedulers)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [p for p, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def family_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and everything under it, the exited and reaped included (a forking
    worker's work horses live for one job each: only their parent's cutime/cstime keeps them)."""
    total = 0
    for p in descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK")


def live_body(rooms: list[str], n: int) -> bytes:
    """The ``n``-th stream state callback: rooms in turn, CONNECTED and END by turns per room."""
    room = rooms[n % len(rooms)]
    state = "CONNECTED" if (n // len(rooms)) % 2 == 0 else "END"
    msg = {"room_id": room, "job_id": f"bench-{n}", "output_url": "rtmp://live.example.com/app",
           "stream_key": "bench-key", "state": state}
    return json.dumps({"event_type": "RTMP_STREAM_STATE_CHANGE", "message": json.dumps(msg)}).encode()


def upload_body(n: int) -> bytes:
    """The ``n``-th upload callback: the vendor's example, its videos renamed to be new ones."""
    doc = copy.deepcopy(UPLOAD_TEMPLATE)
    for i, video in enumerate(doc["data"]["videoListInfo"]):
        video["videoId"] = f"bench-{n}-{i}-{video['videoId']}"
    return json.dumps(doc).encode()


@dataclass(frozen=True)
class Route:
    """One path through the pipeline: where its callbacks go, what they are, and the vendor call
    its actions make (the simulator's vendor and endpoint, counted in its call log)."""

    name: str
    url: str
    body: Callable[[int], bytes]
    call: str
    vendor: str
    endpoint: str


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def rq_reference(redis_server: RedisServer, worker_class: str, processes: int, jobs: int, env: dict[str, str],
                 tmp: Path) -> float:
    """No-op jobs per second of RQ's own `rq worker --burst` with ``worker_class``."""
    redis = redis_server.client()
    redis.flushall()
    queue = Queue(NOOP_QUEUE, connection=redis)
    queue.enqueue_many([Queue.prepare_data(NOOP_FUNC, result_ttl=600) for _ in range(jobs)])
    procs = [start([sys.executable, "-m", "rq.cli", "worker", "--burst", "--quiet", "-w", worker_class,
                    "--url", redis_server.url, NOOP_QUEUE], env, tmp / f"rq-{worker_class}-{i}.log")
             for i in range(processes)]
    for proc in procs:
        proc.wait(600)
    ids = queue.finished_job_registry.get_job_ids()
    if len(ids) != jobs:
        raise RuntimeError(f"RQ reference ({worker_class}): {len(ids)} of {jobs} jobs finished")
    pipe = redis.pipeline()
    for job_id in ids:
        pipe.hmget(f"rq:job:{job_id}", "started_at", "ended_at")
    from rq.utils import utcparse

    times = [(utcparse(s.decode()), utcparse(e.decode())) for s, e in pipe.execute()]
    span = (max(e for _, e in times) - min(s for s, _ in times)).total_seconds()
    return jobs / span


def unsettled(redis: Redis, event_ids: list[str]) -> list[str]:
    """The events of ``event_ids`` with no actions yet or with one not finished (two round trips)."""
    pipe = redis.pipeline()
    for event_id in event_ids:
        pipe.smembers(EVENT_ACTIONS_PREFIX + event_id)
    action_sets = pipe.execute()
    pipe = redis.pipeline()
    for s in action_sets:
        for action_id in s:
            pipe.hget(ACTION_PREFIX + action_id.decode(), "status")
    statuses = iter(pipe.execute())  # in the sets' order: each set's are all taken (a list, not all()'s short cut)
    return [event_id for event_id, s in zip(event_ids, action_sets, strict=True)
            if not s or not all([next(statuses) in FINISHED for _ in s])]


class Stack:
    """Redis, simulators, web and worker, kept for every run of the mediahook pipeline."""

    def __init__(self, args: argparse.Namespace, tmp: Path, stack: ExitStack) -> None:
        self.rooms = [f"bench-room-{i:03d}" for i in range(args.rooms)]
        self.redis_server = RedisServer(str(tmp / "redis"), port=free_port()).start()
        stack.callback(self.redis_server.stop)
        self.sim = serve(config={"seed": 1, "max_calls": 100_000})  # a run's calls all kept, to count
        stack.callback(self.sim.stop)
        config = write_config(tmp, self.redis_server.url, self.sim.url, self.rooms)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAHOOK_", "REDIS_URL"))}
        self.env.update(MEDIAHOOK_CONFIG=str(config), WEB_CONCURRENCY="2", PYTHONPATH=str(ROOT))
        port = free_port()
        self.web = start([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                          "--bind", f"127.0.0.1:{port}", "app:create_app()"], self.env, tmp / "web.log")
        stack.callback(stop, self.web)
        cmd = [sys.executable, "-m", "app.cli", "worker", "--worker-class", args.worker_class]
        if args.processes:
            cmd += ["--processes", str(args.processes)]
        self.worker = start(cmd, self.env, tmp / "worker.log")
        stack.callback(stop, self.worker)
        self.base = f"http://127.0.0.1:{port}"
        self.redis = self.redis_server.client()
        self.session = requests.Session()

        def up() -> bool:
            try:
                return self.session.get(self.base + "/readyz", timeout=1).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # a worker still booting
                return False

        wait_for(up, 30, "gunicorn")
        self.routes = {
            "live": Route("live", signed_url(self.base + LIVE_EVENTS, KEY), lambda n: live_body(self.rooms, n),
                          "converter PUT", "flighthub", "update"),
            "upload": Route("upload", f"{self.base}{UPLOAD_HOOK}?{TOKEN_PARAM}={CDN_TOKEN}", upload_body,
                            "first Muducloud create", "muducloud", "create-transcode"),
        }
        self.first = dict.fromkeys(self.routes, 0)

    def cpu(self) -> dict[str, float]:
        return {"web": family_cpu(self.web.pid), "worker": family_cpu(self.worker.pid),
                "redis": cpu_seconds([self.redis_server.process.pid] if self.redis_server.process else []),
                "bench+sim": time.process_time()}

    def vendor_calls(self, route: Route, since: int) -> int:
        """Calls the simulator has taken on the route's vendor endpoint after its call ``since``."""
        return len(self.sim.app.extensions[EXTENSION].list_calls(route.vendor, route.endpoint, since))

    def jobs_run(self) -> int:
        """RQ jobs the worker's processes have run, from their own counts in Redis."""
        return sum((w.successful_job_count or 0) + (w.failed_job_count or 0) for w in Worker.all(connection=self.redis))

    def run(self, route: Route, events: int, rate: float, timeout: float) -> dict:
        """Post ``events`` callbacks of ``route`` (paced at ``rate``/s, or as fast as taken), wait
        for every action; the figures."""
        ids: list[str] = []
        calls0 = self.sim.app.extensions[EXTENSION].seq
        cpu0 = self.cpu()
        jobs0 = self.jobs_run()
        t0 = time.monotonic()
        for i in range(events):
            r = self.session.post(route.url, data=route.body(self.first[route.name] + i), timeout=10)
            r.raise_for_status()
            ids.append(r.json()["event_id"])
            if rate:
                ahead = t0 + (i + 1) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        self.first[route.name] += events
        posted = time.monotonic() - t0
        redis = self.redis
        pending = list(ids)

        def finished() -> bool:
            # The newest event first (the queue is served oldest first): while it is open, a check
            # costs one event's reads, not every event's, which loaded Redis and this process the
            # more the longer a run took; settled events are not read again.
            if unsettled(redis, pending[-1:]):
                return False
            pending[:] = unsettled(redis, pending)
            return not pending

        wait_for(finished, timeout, "every action to finish")
        elapsed = time.monotonic() - t0
        cpu1 = self.cpu()
        wait_for(lambda: self.jobs_run() - jobs0 >= events, 10, "the worker to count its jobs")
        jobs = self.jobs_run() - jobs0  # an event job ends just after its reconcile: counted here
        latencies, statuses = [], {}
        for event_id in ids:
            received = float(redis.hget(f"mh:event:{event_id}", "received_at"))
            done = []
            for action_id in redis.smembers(EVENT_ACTIONS_PREFIX + event_id):
                status, updated = redis.hmget(ACTION_PREFIX + action_id.decode(), "status", "updated_at")
                statuses[status.decode()] = statuses.get(status.decode(), 0) + 1
                done.append(float(updated))
            latencies.append((min(done) - received) * 1000)  # the event's first vendor call made
        return {"path": route.name, "call": route.call, "events": events, "posted_s": posted, "elapsed_s": elapsed,
                "rate": events / elapsed, "jobs": jobs, "jobs_rate": jobs / elapsed,
                "actions": sum(statuses.values()), "vendor_calls": self.vendor_calls(route, calls0),
                "p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 99), "max_ms": max(latencies),
                "statuses": statuses,
                "cpu_ms_per_event": {k: (cpu1[k] - cpu0[k]) * 1000 / events for k in cpu0}}


def show(label: str, r: dict) -> None:
    cpu = "  ".join(f"{k} {v:.1f}" for k, v in r["cpu_ms_per_event"].items())
    print(f"  {label}: {r['events']} events posted in {r['posted_s']:.1f} s ({r['events'] / r['posted_s']:.0f}/s), "
          f"all processed in {r['elapsed_s']:.1f} s: {r['rate']:.1f} events/s ({r['jobs']} RQ jobs, "
          f"{r['jobs'] / r['events']:.2f} per event: {r['jobs_rate']:.0f} jobs/s)")
    print(f"    received → {r['call']} made: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
          f"max {r['max_ms']:.1f} ms; actions {r['statuses']} ({r['actions'] / r['events']:.2f} per event), "
          f"{r['vendor_calls']} {r['call'].removeprefix('first ')} calls at the simulator "
          f"({r['vendor_calls'] / r['elapsed_s']:.0f}/s)")
    print(f"    CPU ms per event: {cpu}")


def run(args: argparse.Namespace) -> int:
    processes = args.processes or default_processes()
    print(f"pipeline: `mediahook worker --worker-class {args.worker_class}` ({processes} process(es) in a pool"
          f"{'' if args.worker_class == 'workers.pool.PoolWorker' else '; another class runs one worker'}), "
          f"{args.rooms} rooms; load average {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mediahook-pipeline-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        st = Stack(args, tmp, stack)
        reference: dict[str, float] = {}
        if not args.skip_reference:
            stop(st.worker)  # alone on the box meanwhile
            for cls in REFERENCE_CLASSES:
                jobs = args.reference_jobs // (4 if cls == "rq.Worker" else 1)
                reference[cls] = rq_reference(st.redis_server, cls, processes, jobs, st.env, tmp)
                print(f"  RQ's own rate, no-op jobs, {processes} × `rq worker --burst -w {cls}`: "
                      f"{reference[cls]:.0f} jobs/s ({jobs} jobs)", flush=True)
            st.redis.flushall()
            cmd = [sys.executable, "-m", "app.cli", "worker", "--worker-class", args.worker_class,
                   "--processes", str(processes)]
            st.worker = start(cmd, st.env, tmp / "worker-2.log")
            stack.callback(stop, st.worker)
        time.sleep(2)  # the worker's processes start and connect
        results: dict[str, dict[str, dict]] = {}
        for name in PATHS if args.path == "both" else (args.path,):
            print(f"  {name} path:", flush=True)
            results[name] = path_runs(st, st.routes[name], args, reference)
        if len(results) == len(PATHS):
            live, upload = (results[name]["full speed"] for name in PATHS)
            cpu = upload["cpu_ms_per_event"]["worker"] / live["cpu_ms_per_event"]["worker"]
            print(f"  upload path / live path, full speed: events/s {upload['rate'] / live['rate']:.2f}×, "
                  f"worker CPU per event {cpu:.2f}×")
        print(f"  load average after: {load_average()}")
        if args.json:
            Path(args.json).write_text(json.dumps({"reference": reference, "runs": results}, indent=2))
        ok = all(set(r["statuses"]) <= {"succeeded", "skipped"} for runs in results.values() for r in runs.values())
        return 0 if ok else 1


def path_runs(st: Stack, route: Route, args: argparse.Namespace, reference: dict[str, float]) -> dict[str, dict]:
    """One path's runs (full speed, then paced), printed with the ratios to RQ's no-op rates."""
    runs = {"full speed": st.run(route, args.events, 0.0, args.timeout)}
    show("full speed", runs["full speed"])
    if args.rate:
        runs[f"paced {args.rate:g}/s"] = r = st.run(route, args.paced_events, args.rate, args.timeout)
        show(f"paced at {args.rate:g}/s", r)
    full = runs["full speed"]
    for cls, rate in reference.items():
        print(f"  ratio to RQ's no-op {cls}: events/s {full['rate'] / rate:.2f}×, "
              f"jobs/s {full['jobs_rate'] / rate:.2f}×", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--path", choices=(*PATHS, "both"), default="both", help="which path to run (default both: "
                                                                           "live, then upload)")
    p.add_argument("--events", type=int, default=1000, help="events of the full-speed run (per path)")
    p.add_argument("--rate", type=float, default=50.0, help="callbacks per second of the paced run (0: none)")
    p.add_argument("--paced-events", type=int, default=500, help="events of the paced run (per path)")
    p.add_argument("--rooms", type=int, default=8, help="rooms (each bound to its own converter)")
    p.add_argument("--processes", type=int, default=0, help="`mediahook worker --processes` (default: cores)")
    p.add_argument("--worker-class", default="workers.pool.PoolWorker",
                   help="passed to `mediahook worker` (default: the pool; rq.Worker: the old forking worker)")
    p.add_argument("--reference-jobs", type=int, default=4000, help="no-op jobs for SimpleWorker (a quarter "
                                                                    "for the forking Worker)")
    p.add_argument("--skip-reference", action="store_true", help="do not measure RQ's no-op rates")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the actions")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

"""Ingest benchmark: signed MetaStudio callbacks through the production gunicorn config, side by
side with a bare Flask app and a "floor" app (bare + one Redis SET) under the very same settings.

    python -m bench.ingest                       # sync and gthread, wrk -t2 -c16 -d10s, 2 rounds
    python -m bench.ingest --worker-class sync -d 20 --rounds 3

Why it is built this way:
  * the absolute req/s of a shared 2-core box says little; the ratio to bare Flask, measured
    alternately (bare, floor, mediahook, bare, floor, mediahook...) in the same run, is what we
    track;
  * bare does no I/O; floor (bench/floor_app.py) adds the one Redis round trip any receiver that
    stores a callback before answering must make, against the same redis-server as mediahook.
    floor/bare is what that round trip alone costs on this machine (client syscalls and
    redis-server CPU on the same cores), mediahook/floor the share of the achievable rate that
    mediahook gets;
  * every request carries a unique body (bench/metastudio_events.lua), so each one is really
    recorded and queued, and the run is refused if any answer was not 200, the RQ queue did
    not grow by the number of accepted events (mediahook) or redis-server did not count one SET
    per accepted request (floor);
  * MSS_A signs only URI + hwTime, so one URL signed at start is valid for the whole run
    (tolerance_seconds = 3600 in the bench config);
  * latency at peak is queueing; p50/p99 at about half the peak rate is what a vendor sees.

Everything started here (redis-server, gunicorn, wrk) is stopped on exit, Ctrl-C or error,
and traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from app.cli.embedded_redis import RedisServer
from app.core.queues import EVENTS_QUEUE
from app.sources.metastudio import signed_url

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "metastudio_events.lua"
CONF = ROOT / "deploy" / "gunicorn.conf.py"
LIVE_EVENTS = "/hooks/metastudio/live-events"
KEY = "bench-metastudio-key-0123456789a"  # at most 32 characters, as the vendor allows
QUEUE_KEY = f"rq:queue:{EVENTS_QUEUE}"
APPS = {"bare": "bench.bare_app:create_app()", "floor": "bench.floor_app:create_app()",
        "mediahook": "app:create_app()"}
ORDER = ("bare", "floor", "mediahook")  # the order of the runs in every round
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 only, whatever http_proxy says
WRK_MISSING = ("wrk not found. Install it (Debian/Ubuntu: `apt-get install wrk`; macOS: `brew install wrk`) "
               "and run the benchmark again.")


@dataclass
class Result:
    """One wrk run, as reported by the Lua script's done()."""

    app: str
    rate: float
    requests: int
    ok: int
    dup: int
    non200: int
    errors: int
    p50_ms: float
    p99_ms: float
    cpu_us: dict[str, float] | None = None  # CPU µs per answered request: app (all gunicorn processes), redis, wrk
    busy: float | None = None  # share of the machine's CPU time that was busy during the run
    stored: int | None = None  # after the run: RQ queue length (mediahook), SET calls (floor)
    per_trip: float | None = None  # EVALSHA (mediahook) or SET (floor) calls per reply write of redis-server
    paced_ms: float = 0.0  # wrk delay() per connection, 0 at peak
    pinned: bool = False  # processes pinned to CPUs: then ``busy`` (machine-wide) says little

    @property
    def stored_what(self) -> str:
        return "queued" if self.app == "mediahook" else "SETs"

    def problems(self, connections: int) -> list[str]:
        """Why this run does not count: refused requests, or events that were not stored."""
        out = []
        if self.non200 or self.dup:
            out.append(f"{self.non200} non-200 and {self.dup} duplicate/ignored answers")
        if self.ok == 0:
            out.append("no request was accepted")
        # wrk stops with up to one request per connection in flight: the server may have
        # stored those without wrk counting their answers.
        if self.stored is not None and not self.ok <= self.stored <= self.ok + connections:
            out.append(f"{self.stored_what} {self.stored} does not match {self.ok} accepted")
        return out

    def line(self) -> str:
        queued = f"  {self.stored_what} {self.stored}" if self.stored is not None else ""
        if self.per_trip is not None:
            queued += f" ({self.per_trip:.1f}/trip)"
        cpu = "  CPU µs/req " + " ".join(f"{k} {v:.0f}" for k, v in self.cpu_us.items()) if self.cpu_us else ""
        busy = f"  busy {self.busy:.0%}" if self.busy is not None else ""
        if self.busy is not None and self.busy < 0.85 and self.paced_ms == 0 and not self.pinned:
            busy += " (a core idle at peak: keep-alive connections piled on one worker?)"
        return (f"{self.app:>9}: {self.rate:6.0f} req/s  p50 {self.p50_ms:5.2f} ms  p99 {self.p99_ms:6.2f} ms  "
                f"200 {self.ok}  non-200 {self.non200}  sock err {self.errors}{queued}{cpu}{busy}")


@dataclass
class Server:
    """A running gunicorn: where to send requests, whose CPU time to count, and for mediahook
    and floor the Redis that must hold what it accepted."""

    app: str
    port: int
    pid: int
    redis: RedisServer | None = None


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (utime, stime from /proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone (or not Linux): counted as nothing
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_idle() -> tuple[int, int]:
    """(busy, idle) jiffies of all cores so far, from /proc/stat (iowait counts as idle)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    idle = values[3] + values[4]
    return sum(values) - idle, idle


def process_family(pid: int) -> list[int]:
    """``pid`` and its direct children (a gunicorn master and its workers)."""
    out = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def load_average() -> str:
    """1, 5 and 15 minute load averages: how busy the shared box was around the runs."""
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_env(config: Path, workers: int, worker_class: str, threads: int) -> dict[str, str]:
    """The environment for gunicorn: ours only, so REDIS_URL, secrets or a spool dir set in the
    caller's shell cannot point the bench at another Redis or key."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MEDIAHOOK_") and k not in ("REDIS_URL", "WEB_CONCURRENCY")}
    env.update(MEDIAHOOK_CONFIG=str(config), WEB_CONCURRENCY=str(workers), MEDIAHOOK_WORKER_CLASS=worker_class,
               MEDIAHOOK_THREADS=str(threads), MEDIAHOOK_LOG_LEVEL="warning", PYTHONUNBUFFERED="1")
    return env


def write_config(tmp: Path, redis_url: str) -> Path:
    """A bench config: our Redis, a private spool, MSS_A with a one-hour hwTime tolerance."""
    path = tmp / "mediahook.toml"
    path.write_text(
        f'spool_dir = {json.dumps(str(tmp / "spool"))}\n\n'
        f'[redis]\nurl = {json.dumps(redis_url)}\n\n'
        f'[sources.metastudio]\nauth_type = "MSS_A"\nkey = "{KEY}"\ntolerance_seconds = 3600\n'
    )
    return path


@contextlib.contextmanager
def gunicorn(app: str, env: dict[str, str], log_path: Path, redis: RedisServer | None = None,
             cpus: set[int] | None = None) -> Iterator[Server]:
    """gunicorn with the production conf on a free port; stopped on exit.

    Its own session, so a Ctrl-C reaches only this script, which then stops it in order.
    The floor app finds its Redis in REDIS_URL (mediahook in the bench config). With ``cpus``,
    the master (and so every worker it forks) runs on those CPUs only."""
    port = free_port()
    if app == "floor":
        assert redis is not None
        env = {**env, "REDIS_URL": redis.url}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(CONF), "--bind", f"127.0.0.1:{port}", APPS[app]],
            env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=pin_to(cpus))
    try:
        wait_serving(proc, port, log_path)
        yield Server(app, port, proc.pid, redis)
    finally:
        if proc.poll() is None:
            proc.terminate()  # graceful: the master stops its workers
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(ProcessLookupError):  # any worker the master left behind
            os.killpg(proc.pid, signal.SIGKILL)


def parse_cpus(text: str) -> set[int]:
    """A CPU list as taskset takes it: "2", "0-3", "0,2-3"."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def pin_to(cpus: set[int] | None):  # -> a preexec_fn for subprocess, or None
    """Run a child process on ``cpus`` only (its own threads and children inherit it)."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def pin_process(pid: int, cpus: set[int] | None) -> None:
    """Move a running process, every thread of it, to ``cpus`` (redis-server has I/O threads)."""
    if not cpus:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cpus)


def wait_serving(proc: subprocess.Popen, port: int, log_path: Path, timeout: float = 30.0) -> None:
    """Until a signed event is answered 200 (the workers have built their apps)."""
    deadline = time.monotonic() + timeout
    body = b'{"event_type":"RTMP_STREAM_STATE_CHANGE","message":"{\\"room_id\\":\\"r\\",\\"job_id\\":\\"j\\",' \
           b'\\"output_url\\":\\"rtmp://127.0.0.1/x\\",\\"state\\":\\"END\\"}"}'
    url = signed_url(f"http://127.0.0.1:{port}{LIVE_EVENTS}", KEY)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with NO_PROXY.open(req, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn did not answer in {timeout}s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)


def fresh_aof(client: Redis, timeout: float = 30.0) -> None:
    """Rewrite the (now empty) AOF and wait for it: redis-server rewrites its AOF in a forked
    child once the file has doubled since the last rewrite (and is over 64 MB), copying the
    whole dataset. Left alone, that lands in some mediahook runs and not others (a run appends
    ~2 KB per event); starting every run from a just-rewritten empty AOF keeps it out of all of
    them (a run at these rates stays well under 64 MB)."""
    if not int(client.info("persistence").get("aof_enabled", 0)):
        return
    deadline = time.monotonic() + timeout
    for start in (True, False):  # wait out any rewrite already under way, start ours, wait for it
        while (info := client.info("persistence"))["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]:
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server's AOF rewrite did not finish")
            time.sleep(0.05)
        if start:
            client.bgrewriteaof()


def drained(client: Redis, spool_dir: str, timeout: float = 60.0) -> None:
    """Until the web side's spool is empty (its drainers moved every file into Redis)."""
    deadline = time.monotonic() + timeout
    while any(Path(spool_dir).glob("*.event.json")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the spool did not drain in {timeout:g} s")
        time.sleep(0.1)


def measure(server: Server, args: argparse.Namespace, duration: float, delay_ms: float = 0.0,
            stall: bool = False) -> Result:
    """One wrk run against ``server``: the same script and parameters for every app.

    Also counts the CPU each side used, since on a shared 2-core box wrk and redis-server
    compete with the app. For mediahook and floor, Redis is emptied and its command counters
    reset first, so that the queue length (mediahook) or the SET count (floor) afterwards is
    what this run stored.

    ``stall``: redis-server is SIGSTOPped for the whole run (callbacks must be answered from the
    spool) and SIGCONTed after it; the queue is counted once the spool has drained into Redis, so
    the check that every accepted event is queued once still holds."""
    port = server.port
    path = signed_url(f"http://127.0.0.1:{port}{LIVE_EVENTS}", KEY)[len(f"http://127.0.0.1:{port}"):]
    env = {**os.environ, "BENCH_PATH": path, "BENCH_DELAY_MS": f"{delay_ms:.3f}",
           "BENCH_CLOSE": "1" if args.close else "0"}
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration:g}s", "--timeout", "5s",
           "-s", str(LUA), f"http://127.0.0.1:{port}/"]
    client = server.redis.client() if server.redis else None
    try:
        if client:
            client.flushall()
            fresh_aof(client)
            client.config_resetstat()
        app_pids = process_family(server.pid)
        redis_pids = [server.redis.process.pid] if server.redis and server.redis.process else []

        def snapshot() -> tuple[float, float, float, tuple[int, int]]:
            children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once reaped
            return (cpu_seconds(app_pids), cpu_seconds(redis_pids), children.ru_utime + children.ru_stime,
                    machine_busy_idle())

        before = snapshot()
        stopped = bool(stall and redis_pids)
        if stopped:
            os.kill(redis_pids[0], signal.SIGSTOP)
        try:
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60,
                                 preexec_fn=pin_to(args.wrk_cpus))
        finally:
            if stopped:
                os.kill(redis_pids[0], signal.SIGCONT)
        after = snapshot()
        if stopped:
            drained(client, args.spool_dir)
        stored = per_trip = None
        if client:
            # redis-server writes a client's replies once per event-loop pass, so commands per
            # reply write ~ commands per round trip: 1.0 unless group commit shares round trips.
            writes = client.info("stats")["total_writes_processed"]
            command = "cmdstat_evalsha" if server.app == "mediahook" else "cmdstat_set"
            calls = int(client.info("commandstats").get(command, {}).get("calls", 0))
            per_trip = calls / max(writes, 1)
            stored = client.llen(QUEUE_KEY) if server.app == "mediahook" else calls
    finally:
        if client:
            client.close()
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    doc = json.loads(line.removeprefix("BENCH_JSON "))
    per_req = 1e6 / max(doc["requests"], 1)
    cpu = {"app": (after[0] - before[0]) * per_req}
    if redis_pids:
        cpu["redis"] = (after[1] - before[1]) * per_req
    cpu["wrk"] = (after[2] - before[2]) * per_req
    busy, idle = (a - b for a, b in zip(after[3], before[3], strict=True))
    return Result(
        app=server.app, rate=doc["requests"] / (doc["duration_us"] / 1e6), requests=doc["requests"], ok=doc["ok"],
        dup=doc["dup"], non200=doc["non200"],
        errors=doc["err_connect"] + doc["err_read"] + doc["err_write"] + doc["err_timeout"],
        p50_ms=doc["p50_us"] / 1000, p99_ms=doc["p99_us"] / 1000, cpu_us=cpu,
        busy=busy / (busy + idle) if busy + idle else None, stored=stored, per_trip=per_trip, paced_ms=delay_ms,
        pinned=bool(args.app_cpus or args.redis_cpus or args.wrk_cpus))


def median(results: list[Result], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in results)


def median_cpu(results: list[Result]) -> str:
    keys = results[0].cpu_us or {}
    return "CPU µs/req " + " ".join(f"{k} {statistics.median((r.cpu_us or {})[k] for r in results):.0f}" for k in keys)


def round_ratios(num: list[Result], den: list[Result]) -> tuple[float, float, float]:
    """Median, lowest and highest of the per-round ratios of rates (the runs of one round are
    seconds apart, so a round's ratio shares most of the box's noise of that moment)."""
    ratios = [a.rate / b.rate for a, b in zip(num, den, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def bench_worker_class(worker_class: str, tmp: Path, config: Path, redis: RedisServer,
                       args: argparse.Namespace) -> tuple[dict, list[str]]:
    """The three apps under one worker class: alternate peak runs, then paced to half of
    mediahook's peak."""
    threads = args.gthread_threads if worker_class == "gthread" else 1
    env = bench_env(config, args.workers, worker_class, threads)
    label = f"{worker_class} x{args.workers}" + (f", {threads} threads" if worker_class == "gthread" else "")
    print(f"\n== {label}: wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s"
          f"{' (Connection: close)' if args.close else ''}", flush=True)
    problems: list[str] = []
    peak: dict[str, list[Result]] = {app: [] for app in ORDER}
    half: dict[str, list[Result]] = {app: [] for app in ORDER}

    def run(server: Server, into: dict[str, list[Result]], kind: str, delay_ms: float = 0.0) -> None:
        result = measure(server, args, args.duration, delay_ms)
        print(f"  {kind} {result.line()}", flush=True)
        problems.extend(f"{label} {kind} {server.app}: {p}" for p in result.problems(args.connections))
        into[server.app].append(result)

    with contextlib.ExitStack() as stack:
        servers = {app: stack.enter_context(gunicorn(app, env, tmp / f"gunicorn-{app}-{worker_class}.log",
                                                     None if app == "bare" else redis, args.app_cpus))
                   for app in ORDER}
        for server in servers.values():  # warm every app: first requests, caches, pools
            measure(server, args, args.warmup)
        for _ in range(args.rounds):
            for app in ORDER:
                run(servers[app], peak, "peak")

        # Half peak: wrk's delay() paces each connection. A short probe measures the time per
        # request cycle that is not the delay (latency, reconnect), so the delay leaves room for
        # it. bare and floor run at the same pacing, as the latency floors of the box.
        target = median(peak["mediahook"], "rate") / 2
        period_ms = 1000 * args.connections / target
        probe = measure(servers["mediahook"], args, args.warmup, period_ms)
        delay_ms = max(0.0, 2 * period_ms - 1000 * args.connections / probe.rate)
        for _ in range(args.rounds):
            for app in ORDER:
                run(servers[app], half, "half", delay_ms)

        # Redis hung (SIGSTOP) for a whole run, answered from the spool: at the half run's pacing,
        # where the spool path's extra CPU (a file created and fsync'd per callback) meets a box
        # already near its limit, and at half that rate (a quarter of the peak).
        stalled: list[Result] = []
        if args.stall_seconds:
            for stall_delay in (delay_ms, delay_ms + period_ms):
                result = measure(servers["mediahook"], args, args.stall_seconds, stall_delay, stall=True)
                print(f"  stalled-Redis {result.line()}", flush=True)
                problems.extend(f"{label} stalled-Redis mediahook: {p}" for p in result.problems(args.connections))
                stalled.append(result)

    s: dict = {"label": label, "half_target": target, "half_delay_ms": delay_ms,
               "stalled": [dataclasses.asdict(r) for r in stalled]}
    for app in ORDER:
        s[app] = {kind: {"rate": median(runs[app], "rate"), "p50_ms": median(runs[app], "p50_ms"),
                         "p99_ms": median(runs[app], "p99_ms"),
                         "per_trip": median(runs[app], "per_trip") if app != "bare" else None}
                  for kind, runs in (("peak", peak), ("half", half))}
    rate = {app: s[app]["peak"]["rate"] for app in ORDER}
    # each: ratio of the median rates, then median, lowest, highest of the per-round ratios
    s["ratios"] = {f"{a}/{b}": (rate[a] / rate[b], *round_ratios(peak[a], peak[b]))
                   for a, b in (("mediahook", "bare"), ("floor", "bare"), ("mediahook", "floor"))}
    # With the cores saturated the rate follows the CPU all processes spend per request (app +
    # redis-server + wrk), which varies less from run to run than req/s: the ratio it implies.
    cpu = {app: statistics.median(sum((r.cpu_us or {}).values()) for r in peak[app]) for app in ORDER}
    s["cpu_total_us"] = cpu
    s["cpu_ratios"] = {name: cpu[name.split("/")[1]] / cpu[name.split("/")[0]] for name in s["ratios"]}
    s["runs"] = {kind: {app: [dataclasses.asdict(r) for r in runs[app]] for app in ORDER}
                 for kind, runs in (("peak", peak), ("half", half))}

    def row(kind: str, app: str, runs: dict[str, list[Result]], note: str = "") -> str:
        m = s[app][kind]
        cpu = f"   {median_cpu(runs[app])}" if kind == "peak" else ""
        if m["per_trip"] is not None:
            cpu += f"   {m['per_trip']:.1f} per Redis trip"
        return (f"         {app:9} {m['rate']:6.0f} req/s   p50 {m['p50_ms']:5.2f} ms   p99 {m['p99_ms']:6.2f} ms"
                f"{cpu}{note}\n")

    # The verdict uses the per-round median: a round's runs are seconds apart and share the box's
    # load of that moment, while the medians of the rates can come from different moments.
    ratio, of_floor = s["ratios"]["mediahook/bare"][1], s["ratios"]["mediahook/floor"][1]
    notes = {"mediahook/bare": f"target >= 0.70 (per-round median): {'met' if ratio >= 0.7 else 'NOT met'}",
             "floor/bare": "what one Redis round trip alone leaves of bare on this box",
             "mediahook/floor": "the share of the achievable rate that mediahook gets, aim >= 0.80 "
                                f"(per-round median): {'met' if of_floor >= 0.8 else 'NOT met'}"}
    half_p99 = s["mediahook"]["half"]["p99_ms"]
    print(f"-- {label}, medians of {args.rounds} rounds:\n"
          "   peak\n" + "".join(row("peak", app, peak) for app in ORDER) +
          "   ratios: of the median rates; per round median [lowest - highest]; implied by total CPU/req\n" +
          "".join(f"         {name:16} {r:.2f}; {mid:.2f} [{lo:.2f} - {hi:.2f}]; {s['cpu_ratios'][name]:.2f}   "
                  f"{notes[name]}\n" for name, (r, mid, lo, hi) in s["ratios"].items()) +
          f"   half of mediahook's peak (target {target:.0f} req/s, delay {delay_ms:.2f} ms per connection)\n" +
          row("half", "mediahook", half, f"   (target p99 < 10 ms: {'met' if half_p99 < 10 else 'NOT met'})") +
          row("half", "floor", half, "   (same pacing, for scale)") +
          row("half", "bare", half, "   (same pacing, for scale)") +
          "".join(f"   Redis SIGSTOPped for {args.stall_seconds:g} s, "
                  f"{'same pacing' if i == 0 else 'half that rate'} (spooled, drained after; wrk adds "
                  f"samples for the requests a stalled connection could not send, so the wait for the breaker "
                  f"to open counts as an open-loop client would see it):\n"
                  f"         mediahook {r.rate:6.0f} req/s   p50 {r.p50_ms:5.2f} ms   p99 {r.p99_ms:6.2f} ms   "
                  f"answered 200 {r.ok}, queued once drained {r.stored}   (target p99 <= 100 ms: "
                  f"{'met' if r.p99_ms <= 100 else 'NOT met'})\n" for i, r in enumerate(stalled)), end="", flush=True)
    return s, problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-t", "--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("-c", "--connections", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("-d", "--duration", type=float, default=10, help="seconds per measured run (default 10)")
    p.add_argument("--rounds", type=int, default=2,
                   help="alternating bare/floor/mediahook rounds; medians reported (default 2)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of unmeasured warm-up per app (default 2)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                   help="gunicorn workers, the same for every app (default: CPU count, as the conf)")
    p.add_argument("--worker-class", choices=("sync", "gthread", "both"), default="both",
                   help="gunicorn worker class via MEDIAHOOK_WORKER_CLASS (default both, one after the other)")
    p.add_argument("--gthread-threads", type=int, default=4, help="MEDIAHOOK_THREADS for gthread (default 4)")
    for who, what in (("app", "every gunicorn (master and workers)"), ("redis", "redis-server"), ("wrk", "wrk")):
        p.add_argument(f"--{who}-cpus", type=parse_cpus, metavar="LIST",
                       help=f"run {what} on these CPUs only, e.g. 0-1 or 0,2 (default: no pinning). On a "
                            "machine with cores to spare, give each its own to see the app without the others")
    p.add_argument("--stall-seconds", type=float, default=10,
                   help="a run of mediahook at the half-peak pacing with redis-server SIGSTOPped (0: none; "
                        "default 10 s)")
    p.add_argument("--json", metavar="PATH", help="also write the summaries and every run to this JSON file")
    p.add_argument("--close", action="store_true",
                   help="send 'Connection: close' (one request per connection, as nginx without upstream "
                        "keep-alive); sync workers close after each answer anyway")
    args = p.parse_args(argv)
    if min(args.threads, args.connections, args.rounds, args.workers, args.gthread_threads) < 1 \
            or args.duration <= 0 or args.warmup <= 0 or args.connections < args.threads:
        p.error("counts must be >= 1, durations > 0, and connections >= threads")
    usable = os.sched_getaffinity(0)
    for name in ("app_cpus", "redis_cpus", "wrk_cpus"):
        if getattr(args, name) is not None and not getattr(args, name) <= usable:
            p.error(f"--{name.replace('_', '-')}: CPUs {sorted(getattr(args, name) - usable)} are not available "
                    f"(this process may use {sorted(usable)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print(WRK_MISSING, file=sys.stderr)
        return 2
    # SIGTERM and SIGHUP unwind like Ctrl-C, so the with-blocks below stop gunicorn and redis-server
    # (they run in their own sessions, so no signal reaches them but ours).
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    classes = ["sync", "gthread"] if args.worker_class == "both" else [args.worker_class]
    print(f"machine: {os.cpu_count()} cores, {sys.version.split()[0]}; gunicorn conf {CONF.relative_to(ROOT)}; "
          f"load average {load_average()} before")
    pins = [f"{who} on CPUs {','.join(map(str, sorted(cpus)))}" for who, cpus in
            (("gunicorn", args.app_cpus), ("redis-server", args.redis_cpus), ("wrk", args.wrk_cpus)) if cpus]
    print("pinned: " + "; ".join(pins) if pins else "not pinned: gunicorn, redis-server and wrk share every core")
    summaries: dict[str, dict] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mediahook-bench-") as tmp_name:
        tmp = Path(tmp_name)
        redis = RedisServer(str(tmp / "redis"), port=free_port())
        try:
            redis.start()
            if redis.process:
                pin_process(redis.process.pid, args.redis_cpus)
            config = write_config(tmp, redis.url)
            args.spool_dir = str(tmp / "spool")
            for worker_class in classes:
                summaries[worker_class], found = bench_worker_class(worker_class, tmp, config, redis, args)
                problems += found
        finally:
            redis.stop()
    print(f"\nload average {load_average()} after (other work on the box competes with every run)")
    if len(summaries) == 2:
        best = max(summaries, key=lambda k: summaries[k]["ratios"]["mediahook/bare"][1])
        print("\n== sync vs gthread (ratios: per-round medians, each under its own class):")
        for name, s in summaries.items():
            r = s["ratios"]
            print(f"   {name:8} bare {s['bare']['peak']['rate']:6.0f}  floor {s['floor']['peak']['rate']:6.0f}  "
                  f"mediahook {s['mediahook']['peak']['rate']:6.0f}   mediahook/bare {r['mediahook/bare'][1]:.2f}  "
                  f"floor/bare {r['floor/bare'][1]:.2f}  mediahook/floor {r['mediahook/floor'][1]:.2f}   "
                  f"half-peak p99 {s['mediahook']['half']['p99_ms']:.2f} ms")
        print(f"   better for mediahook relative to bare: {best}")
    if args.json:
        Path(args.json).write_text(json.dumps({"argv": sys.argv[1:], "args": vars(args), "classes": summaries,
                                               "problems": problems}, indent=1))
    if problems:
        print("\nINVALID RUN: the figures above do not measure accepted events:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; everything the benchmark started has been stopped", file=sys.stderr)
        sys.exit(130)

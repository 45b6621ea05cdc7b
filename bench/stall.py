"""Callbacks answered while Redis hangs, measured per request from Python clients.

    python -m bench.stall                        # 16 clients, ~300 callbacks/s, Redis SIGSTOPped 8 s
    python -m bench.stall --clients 8 --pause-ms 20 --stall-seconds 8 --warm

Starts its own redis-server and gunicorn (the production conf, 2 sync workers), SIGSTOPs Redis
(from the first request, or after a warm-up with ``--warm``), has ``--clients`` threads post
signed MetaStudio callbacks with a pause between each, SIGCONTs Redis, waits for the spool to
drain, and prints the answer times of the callbacks sent during the stall: p50, p99, max, how
many took longer than the breaker's 0.25 s trip, and that every answered event was queued once.
It complements ``bench.ingest``'s wrk runs: each request's time and moment are kept, so the
callbacks that waited for the breaker to open can be told from the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import requests

from app.cli.embedded_redis import RedisServer
from app.core.breaker import INGEST_TIMEOUT_SECONDS
from app.sources.metastudio import signed_url
from bench.ingest import (
    KEY,
    LIVE_EVENTS,
    QUEUE_KEY,
    bench_env,
    drained,
    free_port,
    gunicorn,
    load_average,
    write_config,
)


def body(client: int, n: int) -> bytes:
    msg = {"room_id": f"stall-{client}-{n}-{time.monotonic_ns()}", "job_id": "j", "output_url": "rtmp://x/y",
           "stream_key": "bench-key", "state": "CONNECTED"}
    return json.dumps({"event_type": "RTMP_STREAM_STATE_CHANGE", "message": json.dumps(msg)}).encode()


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="mediahook-stall-") as tmp_name:
        tmp = Path(tmp_name)
        redis = RedisServer(str(tmp / "redis"), port=free_port())
        redis.start()
        try:
            config = write_config(tmp, redis.url)
            with gunicorn("mediahook", bench_env(config, 2, "sync", 1), tmp / "gunicorn.log", redis) as server:
                base = f"http://127.0.0.1:{server.port}"
                path = signed_url(base + LIVE_EVENTS, KEY)[len(base):]
                times: list[tuple[float, float, int]] = []  # (sent, seconds, status)
                stop = threading.Event()

                def client(number: int) -> None:
                    session = requests.Session()
                    n = 0
                    while not stop.is_set():
                        n += 1
                        sent = time.perf_counter()
                        status = session.post(base + path, data=body(number, n), timeout=10).status_code
                        times.append((sent, time.perf_counter() - sent, status))
                        stop.wait(args.pause_ms / 1000)

                threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
                before = redis.client().llen(QUEUE_KEY)  # the readiness probe's event
                if args.warm:
                    for t in threads:
                        t.start()
                    time.sleep(2)
                stopped_at = time.perf_counter()
                os.kill(redis.process.pid, signal.SIGSTOP)
                if not args.warm:
                    for t in threads:
                        t.start()
                time.sleep(args.stall_seconds)
                os.kill(redis.process.pid, signal.SIGCONT)
                resumed_at = time.perf_counter()
                stop.set()
                for t in threads:
                    t.join()
                client_redis = redis.client()
                drained(client_redis, str(tmp / "spool"))
                queued = client_redis.llen(QUEUE_KEY) - before
        finally:
            redis.stop()
    during = sorted(s for sent, s, _ in times if stopped_at <= sent < resumed_at)
    answered = sum(1 for _, _, status in times if status == 200)
    slow = sum(1 for s in during if s >= INGEST_TIMEOUT_SECONDS)
    pick = lambda q: during[min(len(during) - 1, int(len(during) * q))] * 1000  # noqa: E731
    print(f"stall: {args.clients} clients, pause {args.pause_ms:g} ms, Redis SIGSTOPped {args.stall_seconds:g} s "
          f"({'after a warm-up' if args.warm else 'from the first request'}); load average {load_average()}")
    print(f"  during the stall: {len(during)} callbacks ({len(during) / args.stall_seconds:.0f}/s)  "
          f"p50 {pick(0.5):.1f} ms  p99 {pick(0.99):.1f} ms  max {during[-1] * 1000:.1f} ms  "
          f"(target p99 <= 100 ms: {'met' if pick(0.99) <= 100 else 'NOT met'})")
    print(f"  {slow} waited for the breaker to open (>= {INGEST_TIMEOUT_SECONDS * 1000:.0f} ms: one per request "
          f"in flight when Redis stopped)")
    print(f"  answered 200: {answered} of {len(times)}; queued once the spool drained: {queued}"
          f"{'' if queued == answered else '  MISMATCH'}")
    return 0 if queued == answered and len(times) == answered else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--pause-ms", type=float, default=50, help="pause after each answer, per client (default 50)")
    p.add_argument("--stall-seconds", type=float, default=8, help="how long Redis is stopped (default 8)")
    p.add_argument("--warm", action="store_true", help="start the clients 2 s before Redis stops")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

"""Callbacks answered while Redis hangs, each timed from when it was due (open loop).

    python -m bench.stall                        # 300 callbacks/s, Redis SIGSTOPped 8 s, ~15 s
    python -m bench.stall --rate 600             # see --help

Starts its own redis-server and gunicorn (the production conf, 2 sync workers), sends signed
MetaStudio callbacks at ``--rate`` per second, SIGSTOPs Redis after a 2 s warm-up (both workers
serving, their Redis connections made, as in a service that has been running), keeps sending for
``--stall-seconds``, SIGCONTs Redis, waits for the spool to drain, and prints the answer times
of the callbacks due during the stall (p50, p99, max, how many took the ingest timeout or
longer) and that every answered event was queued once.

Each callback is sent at its due time on a connection of its own, whether or not earlier ones
were answered, and its time runs from when it was due: a vendor does not wait for our answer to
one callback before sending the next, so the callbacks that arrive while a worker waits for
Redis count that wait. (A client that waits for each answer before sending on would hide it:
"coordinated omission". wrk in ``bench.ingest`` estimates it by adding samples; here each
callback's own time and moment are kept.) One asyncio loop sends them all, so the client's own
cost stays far below the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path

from app.cli.embedded_redis import RedisServer
from app.core.config import build
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

WARM_SECONDS = 2.0


def body(n: int) -> bytes:
    msg = {"room_id": f"stall-{n}-{time.monotonic_ns()}", "job_id": "j", "output_url": "rtmp://x/y",
           "stream_key": "bench-key", "state": "CONNECTED"}
    return json.dumps({"event_type": "RTMP_STREAM_STATE_CHANGE", "message": json.dumps(msg)}).encode()


async def post(port: int, path: str, n: int) -> int:
    """One callback on a connection of its own; its HTTP status (0: no answer)."""
    content = body(n)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n".encode() + content)
        answer = await reader.read()  # until the server closes, as asked
    finally:
        writer.close()
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


async def send(port: int, path: str, rate: float, seconds: float, on_start: asyncio.Event,
               times: list[tuple[float, float, int]]) -> None:
    """Callbacks due every 1/rate s for ``seconds``; ``times`` gets (due, seconds to answer, status)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    on_start.set()

    async def one(due: float, n: int) -> None:
        try:
            status = await post(port, path, n)
        except OSError:
            status = 0
        times.append((due, loop.time() - due, status))

    tasks = []
    for n in range(int(seconds * rate)):
        due = start + n / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        tasks.append(asyncio.create_task(one(due, n)))
    await asyncio.gather(*tasks)


async def drive(args: argparse.Namespace, port: int, path: str, redis_pid: int,
                times: list[tuple[float, float, int]]) -> tuple[float, float]:
    """Send for the warm-up and the stall; returns when Redis stopped and resumed
    (loop time)."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    sender = asyncio.create_task(send(port, path, args.rate, WARM_SECONDS + args.stall_seconds, started, times))
    await started.wait()
    await asyncio.sleep(WARM_SECONDS)
    os.kill(redis_pid, signal.SIGSTOP)
    stopped_at = loop.time()
    await asyncio.sleep(max(0.0, stopped_at + args.stall_seconds - loop.time()))
    await sender  # the last callbacks were due just before now; their answers may still come
    os.kill(redis_pid, signal.SIGCONT)
    return stopped_at, loop.time()


def run(args: argparse.Namespace) -> int:
    times: list[tuple[float, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="mediahook-stall-") as tmp_name:
        tmp = Path(tmp_name)
        redis = RedisServer(str(tmp / "redis"), port=free_port())
        redis.start()
        try:
            config = write_config(tmp, redis.url)
            with gunicorn("mediahook", bench_env(config, 2, "sync", 1), tmp / "gunicorn.log", redis) as server:
                base = f"http://127.0.0.1:{server.port}"
                path = signed_url(base + LIVE_EVENTS, KEY)[len(base):]
                before = redis.client().llen(QUEUE_KEY)  # the readiness probe's event
                assert redis.process is not None
                stopped_at, resumed_at = asyncio.run(drive(args, server.port, path, redis.process.pid, times))
                client_redis = redis.client()
                drained(client_redis, str(tmp / "spool"))
                queued = client_redis.llen(QUEUE_KEY) - before
        finally:
            redis.stop()
    during = sorted(took for due, took, _ in times if stopped_at <= due < resumed_at)
    answered = sum(1 for _, _, status in times if status == 200)
    ingest_timeout = build({}, env={}).redis_ingest_timeout  # the default, as the bench's config has it
    slow = sum(1 for took in during if took >= ingest_timeout)
    pick = lambda q: during[min(len(during) - 1, int(len(during) * q))] * 1000  # noqa: E731
    print(f"stall: {args.rate:g} callbacks/s due (open loop), Redis SIGSTOPped {args.stall_seconds:g} s "
          f"after {WARM_SECONDS:g} s; load average {load_average()}")
    print(f"  due during the stall: {len(during)} callbacks ({len(during) / args.stall_seconds:.0f}/s)  "
          f"p50 {pick(0.5):.1f} ms  p99 {pick(0.99):.1f} ms  max {during[-1] * 1000:.1f} ms  "
          f"(target p99 <= 100 ms: {'met' if pick(0.99) <= 100 else 'NOT met'})")
    print(f"  {slow} took the ingest timeout or longer (>= {ingest_timeout * 1000:.0f} ms: those in flight "
          f"when Redis stopped, or due while the breaker was opening)")
    print(f"  answered 200: {answered} of {len(times)}; queued once the spool drained: {queued}"
          f"{'' if queued == answered else '  MISMATCH'}")
    return 0 if queued == answered and len(times) == answered else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=300, help="callbacks due per second (default 300)")
    p.add_argument("--stall-seconds", type=float, default=8, help="how long Redis is stopped (default 8)")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

"""Where a mediahook request's time goes, in µs per request, measured two ways in one process:

  isolated    each piece of the receive path called in a loop (wall and CPU), the Redis write
              also from 1 and 4 threads at once, as the threads of a gthread worker call it;
  in context  the whole request through Flask's test client, once as is and once with one piece
              replaced by a canned result: the difference is what that piece costs inside a
              real request. It is usually larger than the isolated figure (colder caches, more
              allocation), the pieces overlap, and on a shared box it is only good to ~±30 µs.
              The bare and floor apps of bench/ingest.py are measured the same way, for scale.

    python -m bench.pieces [-n 2000] [--rounds 5]

Why: bench/ingest.py says how fast, not why. This runs on its own redis-server without wrk, so
the numbers are per-request costs to rank improvements by. Stubs are applied to this process's
objects only (nothing under app/ is changed). CPU is this process's; Redis's own CPU per request
is printed apart.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from flask import Flask, request

from app import create_app
from app.cli.embedded_redis import RedisServer
from app.core.body import decode_body
from app.core.config import Settings, build
from app.core.events import INGEST_SCRIPT, Event, EventStore, dedup_digest, new_event_id
from app.sources import metastudio
from app.sources.base import KEPT_HEADERS
from app.web import receive
from app.web.receive import _kept_headers, environ_keys, json_response, read_body
from bench import bare_app, floor_app
from bench.ingest import KEY, LIVE_EVENTS, cpu_seconds, free_port

HOST = "127.0.0.1:8000"
RTMP = "RTMP_STREAM_STATE_CHANGE"


def body_factory() -> Callable[[], bytes]:
    """Unique RTMP_STREAM_STATE_CHANGE bodies, shaped like the wrk script's."""
    counter = itertools.count()

    def make() -> bytes:
        n = next(counter)
        message = {"room_id": f"room-1-{n}-0badf00d", "job_id": f"job-1-{n}",
                   "output_url": f"rtmp://127.0.0.1/live/out-{n}", "stream_key": "sk-0badf00d", "state": "CONNECTED"}
        return json.dumps({"event_type": RTMP, "message": json.dumps(message)}).encode()

    return make


def per_call_us(fn: Callable[[], Any], number: int, repeat: int = 5) -> tuple[float, float]:
    """(wall, CPU of this process) µs per call, each the best of ``repeat`` batches of ``number``.

    Best, not median: on a shared box interference only ever adds time. CPU is what limits
    throughput when the cores are saturated; wall adds the wait for Redis."""
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(number):
            fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return min(wall) / number * 1e6, min(cpu) / number * 1e6


def minus(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return a[0] - b[0], a[1] - b[1]


def make_event(body: bytes) -> Event:
    now = time.time()
    return Event(id=new_event_id(now), source="metastudio", endpoint="live-events", type=RTMP,
                 status="queued", received_at=now, body=body, headers={"Content-Type": "application/json"},
                 refs={"room_id": "r", "job_id": "j"}, remote_addr="127.0.0.1",
                 dedup=dedup_digest("metastudio", "live-events", body))


def evalsha_args(store: EventStore, event: Event) -> list[Any]:
    """The EVALSHA arguments exactly as EventStore.ingest builds them, made ahead of timing."""
    return store._args(event)


def threaded_per_event(ingest: Callable[[Event], Any], body: Callable[[], bytes], threads: int,
                       n: int) -> tuple[float, float]:
    """(wall, CPU) µs per event with ``threads`` threads ingesting ``n`` events each at once, as
    the threads of one gthread worker do at peak (each its own round trip); best of 5."""
    wall, cpu = [], []
    for _ in range(5):
        work = [[make_event(body()) for _ in range(n)] for _ in range(threads)]
        start = threading.Barrier(threads + 1)

        def worker(events: list[Event], start: threading.Barrier) -> None:
            start.wait()
            for event in events:
                ingest(event)

        pool = [threading.Thread(target=worker, args=(w, start)) for w in work]
        for t in pool:
            t.start()
        start.wait()
        w0, c0 = time.perf_counter(), time.process_time()
        for t in pool:
            t.join()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return min(wall) / (threads * n) * 1e6, min(cpu) / (threads * n) * 1e6


def post(client: Any, path: str, query: str, data: bytes) -> None:
    resp = client.post(path, query_string=query, data=data, content_type="application/json", base_url=f"http://{HOST}")
    assert resp.status_code == 200, resp.get_data()


Row = tuple[str, tuple[float, float]]  # name, (wall, CPU) µs


def isolated(app: Flask, settings: Settings, redis: RedisServer, path: str, query: str, n: int) -> list[Row]:
    """Each piece in a tight loop."""
    store: EventStore = app.extensions["mediahook"].store
    body = body_factory()
    sample = body()
    payload = json.loads(sample)
    rows: list[Row] = []

    def ctx() -> Any:
        return app.test_request_context(path, method="POST", query_string=query, data=sample,
                                        content_type="application/json", base_url=f"http://{HOST}")

    def read_in_fresh_ctx(read: bool) -> None:
        with ctx():  # get_data drains the body once: each call needs a fresh request context
            if read:
                read_body(request, 1 << 20)

    with ctx():
        assert metastudio.refusal(request, settings) is None
        rows.append(("refusal (MSS_A: canonical URI + HMAC)",
                     per_call_us(lambda: metastudio.refusal(request, settings), n)))
        kept = environ_keys(KEPT_HEADERS + metastudio.KEPT_HEADERS)
        rows.append(("_kept_headers", per_call_us(lambda: _kept_headers(request, kept), n)))
    rows.append(("read_body (request.get_data)",
                 minus(per_call_us(lambda: read_in_fresh_ctx(True), n),
                       per_call_us(lambda: read_in_fresh_ctx(False), n))))
    rows.append(("decode_body (json.loads)", per_call_us(lambda: decode_body(sample, False), n)))
    rows.append(("parse_live_event (Marshmallow load incl. message JSON)",
                 per_call_us(lambda: metastudio.parse_live_event(payload), n)))
    rows.append(("new_event_id + dedup_digest",
                 per_call_us(lambda: (new_event_id(time.time()),
                                      dedup_digest("metastudio", "live-events", sample)), n)))
    rows.append(("EventStore._job_items (template + pickle + zlib + timestamp)",
                 per_call_us(lambda: store._job_items(new_event_id(time.time())), n)))
    event = make_event(sample)
    rows.append(("Event.fields", per_call_us(event.fields, n)))
    rows.append(("json_response (the answer)",
                 per_call_us(lambda: json_response(200, {"code": 0, "message": "OK", "event_id": event.id}), n)))
    redis.client().flushall()
    store.redis.script_load(INGEST_SCRIPT)
    calls = iter([evalsha_args(store, make_event(body())) for _ in range(5 * n)])
    rows.append(("Lua ingest script call (EVALSHA; args made ahead)",
                 per_call_us(lambda: store._call(next(calls)), n)))
    events = iter([make_event(body()) for _ in range(5 * n)])
    rows.append(("EventStore.ingest (job items + fields + Lua)", per_call_us(lambda: store.ingest(next(events)), n)))
    for threads in (1, 4):
        rows.append((f"{threads} thread(s) at once to EventStore.ingest, per event",
                     threaded_per_event(store.ingest, body, threads, max(n // threads, 100))))
    pool = store.redis.connection_pool
    rows.append(("  for scale: redis-py pool get + release",
                 per_call_us(lambda: pool.release(pool.get_connection()), n)))
    rows.append(("  for scale: redis-py PING round trip", per_call_us(store.redis.ping, n)))
    return rows


class _CannedSchema:
    """Stands in for the Marshmallow envelope schema: returns what a load of the sample returns."""

    def load(self, payload: dict) -> dict:
        return {"event_type": RTMP, "message": {"room_id": "r", "job_id": "j"}}


def _no_lua(store: EventStore) -> None:
    # _args puts the event id at index 9 (sha, numkeys, 7 keys); answer as a new event would.
    store._call = lambda args: [1, args[9]]  # type: ignore[method-assign]


def _canned_job_items(store: EventStore) -> None:
    items = store._job_items("x")
    store._job_items = lambda event_id: items  # type: ignore[method-assign]


def _unchanged(store: EventStore) -> None:
    pass


# name -> (patches applied before create_app, change to the built app's store)
STUBS: dict[str, tuple[Callable[[], list[Any]], Callable[[EventStore], None]]] = {
    "Lua ingest call (EVALSHA round trip)": (list, _no_lua),
    "EventStore._job_items": (list, _canned_job_items),
    "Marshmallow load": (lambda: [mock.patch.dict(metastudio.EVENT_SCHEMAS, {RTMP: _CannedSchema()})], _unchanged),
    "refusal": (lambda: [mock.patch.object(metastudio, "refusal", lambda req, settings: None)], _unchanged),
    "_kept_headers": (lambda: [mock.patch.object(receive, "_kept_headers", lambda req, kept: {})], _unchanged),
}


@contextlib.contextmanager
def app_with(settings: Settings, stub: str | None) -> Iterator[Flask]:
    with contextlib.ExitStack() as stack:
        patches, change = STUBS[stub] if stub else (list, _unchanged)
        for patch in patches():
            stack.enter_context(patch)
        app = create_app(settings, start_drainer=False)
        store = app.extensions["mediahook"].store
        change(store)
        try:
            yield app
        finally:
            store.redis.close()


def in_context(settings: Settings, redis: RedisServer, path: str, query: str, n: int,
               rounds: int) -> list[tuple[str, float]]:
    """Whole-request CPU µs, as is and with each piece stubbed; rounds interleaved, best of each."""
    body = body_factory()
    bare = bare_app.create_app().test_client()
    with mock.patch.dict(os.environ, {"REDIS_URL": redis.url}):
        floor = floor_app.create_app().test_client()
    redis_pid = [redis.process.pid] if redis.process else []
    cpu: dict[str, list[float]] = {}
    redis_cpu: list[float] = []
    for _ in range(rounds):
        for stub in (None, *STUBS, "bare", "floor"):
            with contextlib.ExitStack() as stack:
                client = {"bare": bare, "floor": floor}.get(stub or "") or \
                    stack.enter_context(app_with(settings, stub)).test_client()
                bodies = [body() for _ in range(n + 200)]
                for b in bodies[:200]:  # warm up
                    post(client, path, query, b)
                r0, c0 = cpu_seconds(redis_pid), time.process_time()
                for b in bodies[200:]:
                    post(client, path, query, b)
                cpu.setdefault(stub or "full", []).append((time.process_time() - c0) / n * 1e6)
                if stub is None:
                    redis_cpu.append((cpu_seconds(redis_pid) - r0) / n * 1e6)
    full = min(cpu["full"])
    rows = [("WHOLE mediahook request", full)]
    rows += [(f"  {stub}", full - min(cpu[stub])) for stub in STUBS]
    rows.append(("  the rest over bare (Flask rules, Event, dedup hash, answer...)",
                 full - min(cpu["bare"]) - sum(v for _, v in rows[1:])))
    rows.append(("WHOLE bare request", min(cpu["bare"])))
    rows.append(("WHOLE floor request (bare + one Redis SET)", min(cpu["floor"])))
    rows.append(("redis-server CPU per mediahook request (not in the above)", min(redis_cpu)))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--number", type=int, default=2000, help="calls per timed batch (default 2000)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the in-context table (default 5)")
    args = p.parse_args(argv)
    n = args.number
    with tempfile.TemporaryDirectory(prefix="mediahook-pieces-") as tmp:
        redis = RedisServer(str(Path(tmp) / "redis"), port=free_port())
        try:
            redis.start()
            settings = build({"spool_dir": str(Path(tmp) / "spool"), "redis": {"url": redis.url},
                              "sources": {"metastudio": {"auth_type": "MSS_A", "key": KEY, "tolerance_seconds": 3600}}},
                             env={})
            url = metastudio.signed_url(f"http://{HOST}{LIVE_EVENTS}", KEY)
            path, query = url[len(f"http://{HOST}"):].split("?", 1)
            with app_with(settings, None) as app:
                rows = isolated(app, settings, redis, path, query, n)
            stats = redis.client().info("commandstats").get("cmdstat_evalsha", {})
            context_rows = in_context(settings, redis, path, query, n, args.rounds)
        finally:
            redis.stop()
    width = max(len(name) for name, _ in rows + context_rows)
    print(f"Isolated: µs per call, best of 5 batches of {n} (Python {sys.version.split()[0]}); CPU = this process")
    print(f"  {'':<{width}}  {'wall':>7}  {'CPU':>7}")
    for name, (wall, cpu) in rows:
        print(f"  {name:<{width}}  {wall:7.1f}  {cpu:7.1f}")
    if stats:
        print(f"  {'  inside redis-server per EVALSHA (commandstats)':<{width}}  {stats['usec_per_call']:7.1f}")
    print(f"\nIn context: CPU µs per request through Flask's test client, best of {args.rounds} rounds of {n};\n"
          f"a piece's cost = whole request minus whole request with that piece stubbed")
    for name, us in context_rows:
        print(f"  {name:<{width}}  {us:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How fast the console answers with a realistic store: 100,000 events in an embedded Redis.

    .venv/bin/python -m bench.console [--events 100000] [--runs 20]

Loads the events (both sources, several types, rooms and videos; bodies of real size), signs in
to the console with the Flask test client (no network: this measures the app and Redis, not
HTTP), then times each page ``--runs`` times and prints the median and the worst. Also times the
traffic counter a callback pays on the hot path (the WSGI wrapper, in process).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

from app import create_app
from app.cli.embedded_redis import RedisServer
from app.core.config import build
from app.core.events import EVENT_PREFIX, EVENTS_INDEX, Event, dedup_digest
from app.web.traffic import Tally, TrafficMiddleware
from tests.helpers import free_port

TOKEN = "bench-console-token-0123456789"
ROOMS = 200
VIDEOS_EVERY = 4


def _event(n: int, now: float) -> Event:
    received_at = now - (100_000 - n) * 0.5  # one every half second: about 14 hours
    event_id = f"{int(received_at * 1000):011x}{n:012x}"
    room = f"room-{n % ROOMS:04d}"
    if n % VIDEOS_EVERY == 0:
        video = f"VID{n:08d}"
        body = json.dumps({"code": 200, "message": "success", "data": {"videoTotal": 1, "videoListInfo": [
            {"videoId": video, "videoName": f"lecture {n}", "publishDomain": "vod.example.com", "encrypt": 0,
             "transcodeState": 5, "videoSize": 123456789, "videoDuration": 3600.5,
             "videoResolutions": [{"clarity": 1, "height": 1080, "width": 1920}]}]}}).encode()
        return Event(event_id, "cdnetworks", "vod-upload", "VOD_UPLOAD", "processed", received_at, body,
                     {"Content-Type": "application/json", "User-Agent": "CDNetworks"}, {"video_ids": [video]},
                     "203.0.113.7", dedup_digest("cdnetworks", "vod-upload", body))
    state = ("CONNECTING", "CONNECTED", "RECONNECTING", "DISCONNECTED", "END")[n % 5]
    message = {"room_id": room, "job_id": f"job-{n // 50:05d}", "output_url": "rtmp://live.example.com/app",
               "stream_key": "secret-key", "state": state}
    body = json.dumps({"event_type": "RTMP_STREAM_STATE_CHANGE", "message": json.dumps(message)}).encode()
    return Event(event_id, "metastudio", "live-events", "RTMP_STREAM_STATE_CHANGE", "processed", received_at, body,
                 {"Content-Type": "application/json", "User-Agent": "MetaStudio"},
                 {"room_id": room, "job_id": message["job_id"]}, "198.51.100.9",
                 dedup_digest("metastudio", "live-events", body))


def load(redis, count: int) -> None:
    now = time.time()
    pipe = redis.pipeline(transaction=False)
    for n in range(count):
        event = _event(n, now)
        pipe.hset(EVENT_PREFIX + event.id, mapping=dict(zip(*[iter(event.fields())] * 2, strict=True)))
        pipe.zadd(EVENTS_INDEX, {event.id: event.received_at})
        if n % 2000 == 1999:
            pipe.execute()
    pipe.execute()


def load_transcodes(redis, videos: int) -> None:
    """Rung records as workers.transcode keeps them: 4 rungs per video, 1 in 50 videos failed."""
    from workers import transcode

    pipe = redis.pipeline(transaction=False)
    now = time.time()
    for n in range(videos):
        video = f"VID{n * VIDEOS_EVERY:08d}"
        for rung in ("360", "480", "720", "1080"):
            failed = n % 50 == 0 and rung == "1080"
            pipe.hset(transcode.key(video, rung), mapping={
                "state": "failed" if failed else "success", "progress": "0.4" if failed else "1.0",
                "task_id": f"t{n}-{rung}", "updated_at": repr(now - n), "error": "E102: source unreadable" if failed
                else "", "target_url": "" if failed else f"https://cdn.example.com/{video}/{rung}.m3u8"})
            pipe.sadd(transcode.VIDEO_RUNGS_PREFIX + video, rung)
        if n % 500 == 499:
            pipe.execute()
    pipe.execute()


def sign_in(client) -> None:
    page = client.get("/console/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/console/login", data={"csrf_token": csrf, "token": TOKEN}).status_code == 303


def timed(client, path: str, runs: int) -> tuple[float, float, int, int]:
    """(median seconds, worst seconds, HTTP status, event rows shown)."""
    times = []
    r = None
    for _ in range(runs):
        started = time.perf_counter()
        r = client.get(path)
        times.append(time.perf_counter() - started)
    assert r is not None
    rows = r.get_data(as_text=True).count('<tr class="event ')
    return statistics.median(times), max(times), r.status_code, rows


def hot_path_cost(n: int = 200_000) -> float:
    """Microseconds the traffic wrapper adds to one callback (its own work, with a no-op app)."""

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    tally = Tally(redis=None, flush_seconds=3600)  # type: ignore[arg-type]  # never flushed here
    tally._thread = object()  # type: ignore[assignment]  # no thread: only the in-memory count is timed
    wrapped = TrafficMiddleware(app, {"/hooks/x": "x"}, tally, None)
    environ = {"PATH_INFO": "/hooks/x"}
    start = lambda *a: None  # noqa: E731
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            wrapped(environ, start)
        bare = time.perf_counter()
        for _ in range(n):
            app(environ, start)
        ended = time.perf_counter()
        best = min(best, ((bare - started) - (ended - bare)) / n * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--videos", type=int, default=5000, help="videos with 4 transcoded rungs each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(str(Path(tmp) / "redis"), port=free_port()).start()
        try:
            settings = build({"spool_dir": str(Path(tmp) / "spool"), "redis": {"url": server.url},
                              "admin": {"token": TOKEN}}, env={})
            app = create_app(settings, start_drainer=False)
            redis = app.extensions["mediahook"].store.redis
            started = time.perf_counter()
            load(redis, args.events)
            load_transcodes(redis, args.videos)
            took = time.perf_counter() - started
            print(f"loaded {redis.zcard(EVENTS_INDEX)} events, {args.videos} videos x 4 rungs in {took:.1f} s; "
                  f"Redis memory {redis.info('memory')['used_memory_human']}")
            client = app.test_client()
            sign_in(client)
            newest = redis.zrevrange(EVENTS_INDEX, 0, 0)[0].decode()
            pages = [
                ("events, newest 50", "/console/events"),
                ("events, source=cdnetworks", "/console/events?source=cdnetworks"),
                ("events, room_id (about 1 in 270 match)", "/console/events?room_id=room-0007"),
                ("events, video_id (1 match: scan budget)", "/console/events?video_id=VID00050000"),
                ("events, body search (2000 read)", "/console/events?q=no-such-text"),
                ("events, page 100 (cursor)", None),
                ("event detail", f"/console/events/{newest}"),
                ("overview", "/console/"),
                ("transcodes (all videos read, failed first)", "/console/transcodes"),
            ]
            cursor_path = "/console/events"
            for _ in range(99):
                html = client.get(cursor_path).get_data(as_text=True)
                cursor_path = re.search(r'href="([^"]+)" id="older"', html).group(1).replace("&amp;", "&")
            print(f"{'page':44} {'median':>9} {'worst':>9}  status  rows   ({args.runs} runs each)")
            for name, path in pages:
                median, worst, status, rows = timed(client, path or cursor_path, args.runs)
                print(f"{name:44} {median * 1000:7.1f} ms {worst * 1000:7.1f} ms  {status}     {rows:4}")
            print(f"traffic counter on the hot path: {hot_path_cost():.2f} µs per callback (in process)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()

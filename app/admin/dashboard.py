"""Figures the console and the admin API show beyond workers.ops: the overview (traffic per
minute, queues, workers, failures, spool, live streams), the streams live now, and the videos
with transcodes, by state.

Everything here reads Redis in a few pipelined round trips and is bounded: key scans stop after
``SCAN_BUDGET`` keys, lists after their limit, so a large store costs the same as a small one.
"""

from __future__ import annotations

import time
from typing import Any

from redis import Redis, RedisError
from rq import Worker

from app.core.config import Settings
from app.core.queues import queue_figures
from app.sources.metastudio import LIVE_STATES
from app.web import rejections, spool, traffic
from workers import ops, streams, transcode

SCAN_BUDGET = 5000  # videos looked at, at most, by one transcodes listing
SCAN_STEP = 5000  # keys SCAN walks per round trip



# --- queues and workers -----------------------------------------------------------------------

def queues(redis: Redis) -> list[dict[str, Any]]:
    """Per RQ queue: jobs waiting, the oldest one's age, scheduled, running and failed jobs."""
    return queue_figures(redis)


def workers(redis: Redis) -> list[dict[str, Any]]:
    """RQ workers registered (RQ drops one whose heartbeat stopped) and what they do."""
    out = []
    for w in Worker.all(connection=redis):
        beat = w.last_heartbeat.timestamp() if w.last_heartbeat else None
        out.append({"name": w.name, "hostname": w.hostname or "", "pid": w.pid,
                    "state": getattr(w.state, "value", str(w.state)),
                    "queues": [q.name for q in w.queues], "last_heartbeat": beat})
    return sorted(out, key=lambda w: w["name"])


# --- live streams -------------------------------------------------------------------------------

def streams_now(redis: Redis, limit: int = 100) -> list[dict[str, Any]]:
    """Streams by latest state (``streams.list_streams``), live ones first, then newest first."""

    found = streams.list_streams(redis, limit=limit)
    return sorted(found, key=lambda s: (not (s.get("current") and s.get("state") in LIVE_STATES),
                                        -(s.get("at") or 0)))


def stream_history(redis: Redis, room_id: str, job_id: str | None = None) -> list[dict[str, Any]]:
    """A room's states (one job's, given ``job_id``), oldest first in stream order."""

    return streams.stream_history(redis, room_id, job_id) if job_id else streams.states(redis, room_id)


# --- transcodes ---------------------------------------------------------------------------------

# ARGV: rung-set key prefix, rung record key prefix, video ids. Returns, per video: its id, its
# group (failed: a rung failed, timed out or was deleted; done: every rung succeeded; running)
# and its newest rung update. Record keys as workers.transcode.key makes them: prefix + video:rung.
_VIDEO_STATES = """
local out = {}
for i = 3, #ARGV do
  local video = ARGV[i]
  local group, newest, n = 'done', 0, 0
  for _, rung in ipairs(redis.call('SMEMBERS', ARGV[1] .. video)) do
    local f = redis.call('HMGET', ARGV[2] .. video .. ':' .. rung, 'state', 'updated_at')
    n = n + 1
    if f[1] == 'failed' or f[1] == 'timed_out' or f[1] == 'deleted' then
      group = 'failed'
    elseif f[1] ~= 'success' and group == 'done' then
      group = 'running'
    end
    newest = math.max(newest, tonumber(f[2]) or 0)
  end
  if n > 0 then
    out[#out + 1] = video
    out[#out + 1] = group
    out[#out + 1] = tostring(newest)
  end
end
return out
"""
VIDEO_GROUPS = ("failed", "running", "done")


def videos(redis: Redis, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Videos with transcodes (from a bounded scan of the per-video rung sets): those with a
    failed, timed-out or deleted rung first, then running, then done; newest change first.
    ``state`` (failed, running, done) keeps one group."""

    prefix = transcode.VIDEO_RUNGS_PREFIX
    ids = []
    # SCAN walks the whole keyspace (events and all): large steps keep the round trips few.
    for n, key in enumerate(redis.scan_iter(match=prefix + "*", count=SCAN_STEP)):
        if n >= SCAN_BUDGET:
            break
        ids.append(key.decode()[len(prefix):])
    # Each video's group in one server-side pass (a pipeline of 20,000 HMGETs costs the client
    # far more), then the full records of the videos shown only.
    flat = redis.eval(_VIDEO_STATES, 0, prefix, transcode.TRANSCODE_PREFIX, *ids) if ids else []
    found = []
    for i in range(0, len(flat), 3):
        group = flat[i + 1].decode()
        if state is None or group == state:
            found.append({"video_id": flat[i].decode(), "state": group, "updated_at": float(flat[i + 2])})
    found.sort(key=lambda v: (VIDEO_GROUPS.index(v["state"]), -v["updated_at"]))
    shown = found[:limit]
    pipe = redis.pipeline(transaction=False)
    for video in shown:
        pipe.smembers(prefix + video["video_id"])
    rung_sets = [sorted((r.decode() for r in rungs), key=ops._rung_order)  # as ops.transcodes orders them
                 for rungs in (pipe.execute() if shown else [])]
    pipe = redis.pipeline(transaction=False)
    for video, rungs in zip(shown, rung_sets, strict=True):
        for rung in rungs:
            pipe.hgetall(transcode.key(video["video_id"], rung))
    records = iter(pipe.execute() if shown else [])
    for video, rungs in zip(shown, rung_sets, strict=True):
        video["rungs"] = [{**{k.decode(): v.decode() for k, v in next(records).items()}, "rung": r} for r in rungs]
    return shown


# --- the overview -------------------------------------------------------------------------------

def overview(redis: Redis, settings: Settings, minutes: int = 60) -> dict[str, Any]:
    """Everything the overview page shows, in one document. Redis being down is a figure, not
    an error: ``redis_up`` is false and the Redis-read figures are empty."""
    doc: dict[str, Any] = {"at": time.time(), "spool_depth": spool.depth(settings.spool_dir)}
    try:
        redis.ping()
    except RedisError:
        return {**doc, "redis_up": False, "traffic": [], "rejected_by_reason": {}, "queues": [], "workers": [],
                "failed": 0, "streams_live": 0}
    from app.core.queues import EVENTS_QUEUE, FAILED_INDEX

    per_minute = traffic.per_minute(redis, minutes)
    live = [s for s in streams_now(redis) if s.get("state") in LIVE_STATES and s.get("current", True)]
    by_queue = queues(redis)
    # Actions failed for good, plus event jobs out of retries (the Failed page lists both).
    failed = redis.zcard(FAILED_INDEX) + sum(q["failed"] for q in by_queue if q["name"] == EVENTS_QUEUE)
    return {**doc, "redis_up": True, "traffic": per_minute,
            "rejected_by_reason": rejections.by_reason(redis, since=time.time() - minutes * 60),
            "queues": by_queue, "workers": workers(redis), "failed": failed, "streams_live": len(live)}

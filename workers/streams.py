"""The latest known state of each live stream, kept so actions converge on it.

Stream events may arrive late, twice or out of order, and event jobs may run out of order:
a state is recorded only if its event was received after the one already recorded.
"""

from __future__ import annotations

from typing import Any

from redis import Redis

STREAM_PREFIX = "mh:stream:"
HISTORY_SUFFIX = ":history"
STREAM_TTL = 30 * 86400

# KEYS: stream hash, history zset; ARGV: received_at, state, event_id, job_id, output_url, ttl
_RECORD = """
local current = tonumber(redis.call('HGET', KEYS[1], 'received_at') or '-1')
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3] .. ':' .. ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[6])
if tonumber(ARGV[1]) <= current then return 0 end
redis.call('HSET', KEYS[1], 'received_at', ARGV[1], 'state', ARGV[2], 'event_id', ARGV[3],
           'job_id', ARGV[4], 'output_url', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
"""


def record_state(redis: Redis, room_id: str, state: str, received_at: float, event_id: str, job_id: str,
                 output_url: str) -> bool:
    """True if this became the stream's latest state; False if a later event already won."""
    script = redis.register_script(_RECORD)
    return bool(script(keys=[STREAM_PREFIX + room_id, STREAM_PREFIX + room_id + HISTORY_SUFFIX],
                       args=[repr(received_at), state, event_id, job_id, output_url, STREAM_TTL]))


def latest(redis: Redis, room_id: str) -> dict[str, Any] | None:
    raw = redis.hgetall(STREAM_PREFIX + room_id)
    if not raw:
        return None
    doc: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    doc["received_at"] = float(doc["received_at"])
    return doc


def history(redis: Redis, room_id: str) -> list[dict[str, Any]]:
    out = []
    for member, score in redis.zrange(STREAM_PREFIX + room_id + HISTORY_SUFFIX, 0, -1, withscores=True):
        event_id, _, state = member.decode().partition(":")
        out.append({"event_id": event_id, "state": state, "received_at": score})
    return out

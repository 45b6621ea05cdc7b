"""Live script progress per MetaStudio job: the current scene and paragraph, finished replies."""

from __future__ import annotations

from typing import Any

from redis import Redis

LIVE_PREFIX = "mh:live:"
REPLIES_SUFFIX = ":replies"
LIVE_TTL = 30 * 86400

# Only a switch received after the recorded one moves the timeline (events arrive out of order).
_SWITCH = """
local current = tonumber(redis.call('HGET', KEYS[1], 'script_received_at') or '-1')
if tonumber(ARGV[1]) <= current then return 0 end
redis.call('HSET', KEYS[1], 'script_received_at', ARGV[1], 'room_id', ARGV[2], 'scene_script_name', ARGV[3],
           'shoot_script_sequence_no', ARGV[4], 'shoot_script_title', ARGV[5], 'script_event_id', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[7])
return 1
"""


def script_switched(redis: Redis, msg: dict[str, Any], received_at: float, event_id: str) -> bool:
    script = redis.register_script(_SWITCH)
    return bool(script(keys=[LIVE_PREFIX + msg["job_id"]], args=[
        repr(received_at), msg["room_id"], msg.get("scene_script_name") or "", msg["shoot_script_sequence_no"],
        msg.get("shoot_script_title") or "", event_id, LIVE_TTL]))


def reply_finished(redis: Redis, msg: dict[str, Any], received_at: float) -> None:
    key = LIVE_PREFIX + msg["job_id"] + REPLIES_SUFFIX
    pipe = redis.pipeline()
    pipe.zadd(key, {msg["reply_id"]: received_at}, nx=True)
    pipe.expire(key, LIVE_TTL)
    pipe.hsetnx(LIVE_PREFIX + msg["job_id"], "room_id", msg["room_id"])
    pipe.execute()


def show(redis: Redis, job_id: str) -> dict[str, Any] | None:
    raw = redis.hgetall(LIVE_PREFIX + job_id)
    replies = redis.zrange(LIVE_PREFIX + job_id + REPLIES_SUFFIX, 0, -1, withscores=True)
    if not raw and not replies:
        return None
    doc: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
    doc["finished_replies"] = [{"reply_id": r.decode(), "at": at} for r, at in replies]
    return doc

"""Live script progress per MetaStudio job: the current scene and paragraph, finished replies."""

from __future__ import annotations

from typing import Any

from redis import Redis

from workers.streams import STREAM_TTL as LIVE_TTL  # a job's script timeline lives as long as its stream states
from workers.streams import order_time

LIVE_PREFIX = "mh:live:"
REPLIES_SUFFIX = ":replies"

# Switches are ordered like stream states: by the vendor's signed time where the request had one,
# else by our receive time, receive time breaking ties. A later switch to a different paragraph
# moves the timeline; a later one to the paragraph already shown (a re-delivery) only advances
# the recorded order, so an older switch delivered after it cannot move the timeline back.
# Returns "moved", "same" or "older".
_SWITCH = """
local at = tonumber(redis.call('HGET', KEYS[1], 'script_at') or redis.call('HGET', KEYS[1], 'script_received_at')
                    or '-1')
local received = tonumber(redis.call('HGET', KEYS[1], 'script_received_at') or '-1')
local new_at, new_received = tonumber(ARGV[8]), tonumber(ARGV[1])
if redis.call('HGET', KEYS[1], 'script_event_id') == ARGV[6] then return 'same' end
if new_at < at or (new_at == at and new_received <= received) then return 'older' end
local same = redis.call('HGET', KEYS[1], 'scene_script_name') == ARGV[3]
             and redis.call('HGET', KEYS[1], 'shoot_script_sequence_no') == ARGV[4]
             and redis.call('HGET', KEYS[1], 'shoot_script_title') == ARGV[5]
redis.call('HSET', KEYS[1], 'script_at', ARGV[8], 'script_received_at', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[7])
if same then return 'same' end
redis.call('HSET', KEYS[1], 'room_id', ARGV[2], 'scene_script_name', ARGV[3], 'shoot_script_sequence_no', ARGV[4],
           'shoot_script_title', ARGV[5], 'script_event_id', ARGV[6])
return 'moved'
"""


def script_switched(redis: Redis, msg: dict[str, Any], received_at: float, event_id: str,
                    sent_at: float | None = None) -> str:
    """Record a script switch: "moved" (the timeline shows it now), "same" (it already showed
    that paragraph: no change) or "older" (a switch ordered after it is already recorded)."""
    script = redis.register_script(_SWITCH)
    at = order_time(received_at, sent_at)
    outcome = script(keys=[LIVE_PREFIX + msg["job_id"]], args=[
        repr(received_at), msg["room_id"], msg.get("scene_script_name") or "", str(msg["shoot_script_sequence_no"]),
        msg.get("shoot_script_title") or "", event_id, LIVE_TTL, repr(float(at))])
    return outcome.decode() if isinstance(outcome, bytes) else outcome


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

"""Cloud-phone video settings: apply a named ``[koophone.profiles]`` profile to instances.

Bindings apply a profile to a room's instances on a stream state (e.g. RECONNECTING → low);
the CLI applies one on demand. At most 100 instances per call. A binding's apply is skipped
when the stream has moved on to another state by the time it runs (events out of order).
"""

from __future__ import annotations

import time

from workers import streams
from workers.actions import Skip, tracked
from workers.clients import koophone
from workers.context import redis as current_redis
from workers.context import settings

INSTANCE_PREFIX = "mh:koophone:"


def apply(action_id: str, profile: str, instance_ids: list[str], room_id: str | None = None,
          state: str | None = None) -> None:
    redis = current_redis()
    with tracked(redis, action_id) as out:
        cfg = settings().koophone
        if cfg is None:
            raise Skip("[koophone] is not configured")
        if profile not in cfg.profiles:
            raise Skip(f"no profile {profile!r} in [koophone.profiles] any more")
        if room_id and state:
            latest = streams.latest(redis, room_id)
            if latest and latest["state"] != state:
                raise Skip(f"stream {room_id} moved on to {latest['state']}")
        koophone.apply_video_settings(cfg, list(instance_ids), cfg.profiles[profile])
        now = repr(time.time())
        pipe = redis.pipeline()
        for instance in instance_ids:
            pipe.hset(INSTANCE_PREFIX + instance, mapping={"profile": profile, "applied_at": now,
                                                           "action_id": action_id})
        pipe.execute()
        out["result"] = {"profile": profile, "instances": len(instance_ids)}

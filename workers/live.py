"""Start a MetaStudio live job whose live-event callbacks come back to this service.

Starting a job is not idempotent and MetaStudio offers us no way to look one up, so only
failures that certainly did not start a job (connection refused, 429, 5xx with an error
code) are retried; a timeout or a connection lost after sending (``VendorError.maybe_done``) is
reported as failed with "outcome unknown" for a human to check, rather than risking a second
live job.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from redis import Redis

from app.settings import Settings
from workers import actions
from workers.actions import tracked
from workers.clients import metastudio
from workers.clients.http import VendorError
from workers.context import redis as current_redis
from workers.context import settings
from workers.timeline import LIVE_PREFIX, LIVE_TTL

LIVE_EVENTS_PATH = "/hooks/metastudio/live-events"


def callback_config(s: Settings) -> dict[str, Any]:
    """live_event_callback_config pointing at our live-events endpoint, with our auth settings."""
    if not s.public_base_url:
        raise ValueError("public_base_url must be set: MetaStudio needs the URL to call back")
    if s.metastudio is None:
        raise ValueError("[sources.metastudio] must be configured: its auth_type/key sign the callbacks")
    url = s.public_base_url + LIVE_EVENTS_PATH
    config: dict[str, Any] = {"auth_type": s.metastudio.auth_type, "callback_event_type": metastudio.EVENT_TYPES}
    if s.metastudio.auth_type == "NONE":
        url += f"?token={s.metastudio.token}"
    else:
        config["key"] = s.metastudio.key
    config["live_event_type_callback_url"] = url
    return config


def queue_start(redis: Redis, s: Settings, room_id: str, output_url: str, stream_key: str) -> str:
    """Check what can be checked now, then queue the start; returns the action id."""
    if s.metastudio_api is None:
        raise ValueError("[metastudio] is not configured")
    callback_config(s)
    action_id = f"live-start-{room_id}-{uuid.uuid4().hex[:12]}"
    # A single attempt plus the retries that are safe (see the module docstring).
    actions.enqueue(redis, action_id, start, kind="live.start", event_id=None, policy=s.metastudio_api.http,
                    params={"action_id": action_id, "room_id": room_id, "output_url": output_url,
                            "stream_key": stream_key})
    return action_id


def start(action_id: str, room_id: str, output_url: str, stream_key: str) -> None:
    redis = current_redis()
    with tracked(redis, action_id) as out:
        s = settings()
        if s.metastudio_api is None:
            raise actions.Skip("[metastudio] is not configured")
        body = {"output_urls": [output_url], "stream_keys": [stream_key],
                "live_event_callback_config": callback_config(s)}
        try:
            job_id = metastudio.start_job(s.metastudio_api, room_id, body)
        except VendorError as exc:
            if exc.transient and exc.maybe_done:
                raise VendorError(exc.vendor, f"{exc.message}: outcome unknown, check MetaStudio before starting "
                                  "again", transient=False) from None
            raise
        pipe = redis.pipeline()
        pipe.hset(LIVE_PREFIX + job_id, mapping={"room_id": room_id, "output_url": output_url,
                                                 "started_at": repr(time.time()), "start_action": action_id})
        pipe.expire(LIVE_PREFIX + job_id, LIVE_TTL)
        pipe.execute()
        out["result"] = {"job_id": job_id, "room_id": room_id}

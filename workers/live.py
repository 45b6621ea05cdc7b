"""Start a MetaStudio live job whose live-event callbacks come back to this service.

Starting a job is not idempotent and MetaStudio offers no way to look one up, so a start request
is sent at most once. The attempt records its intent on the action record before the call
(``actions.INTENT_AT``); an attempt that finds it already there (its predecessor's worker died
mid-call, and RQ runs the job again) does not call, but ends "outcome unknown". So does a call
sent with no answer (a read timeout, a connection lost after sending) or a gateway error after
sending (502, 504). Failures that certainly started nothing (connection refused, 429, 503, a
5xx with the vendor's error body, a 4xx) clear the intent, and are retried where that may help.

An outcome-unknown start is never run again by RQ, a bulk requeue or a replay (see
``actions.OutcomeUnknown``): a person checks MetaStudio, then, if no job runs, starts it again
explicitly (``start_again``), which queues a NEW start action that records the one it replaces.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from app.core.config import Settings
from app.sources.metastudio import EVENT_TYPES, HOOK_PATH
from workers import actions
from workers.actions import LIVE_START
from workers.clients import metastudio
from workers.clients.http import VendorError
from workers.timeline import LIVE_PREFIX, LIVE_TTL


def callback_config(settings: Settings) -> dict[str, Any]:
    """live_event_callback_config pointing at our live-events endpoint, with our auth settings."""
    if not settings.public_base_url:
        raise ValueError("public_base_url must be set: MetaStudio needs the URL to call back")
    if settings.metastudio_source is None:
        raise ValueError("[sources.metastudio] must be configured: its auth_type/key sign the callbacks")
    url = settings.public_base_url + HOOK_PATH
    config: dict[str, Any] = {"auth_type": settings.metastudio_source.auth_type,
                              "callback_event_type": list(EVENT_TYPES)}
    if settings.metastudio_source.auth_type == "NONE":
        url += f"?token={settings.metastudio_source.token}"
    else:
        config["key"] = settings.metastudio_source.key
    config["live_event_type_callback_url"] = url
    return config


STARTED_JOB = "started_job_id"  # action record field: the job MetaStudio answered with
REPLACES, REPLACED_BY = "replaces", "replaced_by"
_ROOM_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class Refused(ValueError):
    """A start again that cannot be done (not a failed live start, already started again ...)."""


def queue_start(redis: Redis, settings: Settings, room_id: str, output_url: str, stream_key: str,
                replaces: str | None = None) -> str:
    """Check what can be checked now, then queue the start; returns the action id."""
    if settings.metastudio_api is None:
        raise ValueError("[metastudio] is not configured")
    callback_config(settings)
    if not _ROOM_ID.fullmatch(room_id):
        raise ValueError("room_id: 1 to 128 of A-Z a-z 0-9 _ -")
    action_id = f"live-start-{room_id}-{uuid.uuid4().hex[:12]}"
    params: dict[str, Any] = {"action_id": action_id, "room_id": room_id, "output_url": output_url,
                              "stream_key": stream_key}
    if replaces:
        params["replaces"] = replaces
        redis.hset(actions.ACTION_PREFIX + action_id, REPLACES, replaces)
    # A single attempt plus the retries that are safe (see the module docstring).
    actions.enqueue(redis, action_id, LIVE_START, event_id=None, policy=settings.metastudio_api.http, params=params)
    return action_id


def _unknown(action_id: str, room_id: str, why: str) -> str:
    return (f"{why}: outcome unknown. MetaStudio may have started a live job in room {room_id}: check before "
            f"starting again (mediahook live start-again {action_id})")


def start(action_id: str, room_id: str, output_url: str, stream_key: str, replaces: str | None = None) -> None:
    key = actions.ACTION_PREFIX + action_id
    with actions.running(action_id, LIVE_START) as run:
        redis, out = run.redis, run.out
        body = {"output_urls": [output_url], "stream_keys": [stream_key],
                "live_event_callback_config": callback_config(run.settings)}
        started = redis.hget(key, STARTED_JOB)
        if started:  # an earlier attempt started it, and stopped before it could say so
            out["result"] = {"job_id": started.decode(), "room_id": room_id}
            return
        if not redis.hsetnx(key, actions.INTENT_AT, repr(time.time())):
            raise actions.OutcomeUnknown(metastudio.VENDOR, _unknown(
                action_id, room_id, "an earlier attempt sent (or was about to send) this start request and "
                "stopped before its answer was recorded"))
        try:
            job_id = metastudio.start_job(run.cfg, room_id, body)
        except VendorError as exc:
            if exc.maybe_done:
                raise actions.OutcomeUnknown(exc.vendor, _unknown(action_id, room_id, exc.message), code=exc.code,
                                             status=exc.status) from None
            redis.hdel(key, actions.INTENT_AT)  # certainly not started: a retry may send it again
            raise
        pipe = redis.pipeline()
        pipe.hset(key, STARTED_JOB, job_id)
        pipe.hset(LIVE_PREFIX + job_id, mapping={"room_id": room_id, "output_url": output_url,
                                                 "started_at": repr(time.time()), "start_action": action_id})
        pipe.expire(LIVE_PREFIX + job_id, LIVE_TTL)
        pipe.execute()
        out["result"] = {"job_id": job_id, "room_id": room_id}


def _job(redis: Redis, action_id: str) -> Job | None:
    try:  # a live start's id is a valid RQ job id (the room id is checked), so it is its job's id
        return Job.fetch(action_id, connection=redis)
    except (NoSuchJobError, ValueError):
        return None


def _kept_stream_key(job: Job | None) -> str | None:
    """The stream key of an earlier start: kept only in its RQ job (for failure_ttl), never in records."""
    if job is None:
        return None
    return (job.kwargs or {}).get("stream_key") or None


def start_again(redis: Redis, settings: Settings, action_id: str, stream_key: str | None = None) -> dict[str, Any]:
    """Queue ONE new start request for a live start that failed (its outcome unknown, typically),
    after a person checked that MetaStudio runs no job for it. The new action records the one it
    replaces, and the old one the new one; a start is started again once at most."""
    doc = actions.record(redis, action_id)
    if doc is None:
        raise LookupError(f"no action {action_id}")
    if doc.get("kind") != LIVE_START.kind:
        raise Refused(f"{action_id} is not a live start ({doc.get('kind')})")
    if doc.get(REPLACED_BY):
        raise Refused(f"{action_id} was already started again as {doc[REPLACED_BY]}")
    job = _job(redis, action_id)
    # Failed: by our record, or by RQ's alone (its worker died with no retry left, so nothing marked it).
    abandoned = job is not None and job.get_status() in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
    if doc.get("status") != "failed" and not abandoned:
        raise Refused(f"{action_id} is {doc.get('status')}: only a start that failed can be started again")
    params = doc.get("params") or {}
    stream_key = stream_key or _kept_stream_key(job)
    if not stream_key:
        raise Refused(f"the stream key of {action_id} is no longer kept: give it (--stream-key / stream_key)")
    if settings.metastudio_api is None:
        raise ValueError("[metastudio] is not configured")
    callback_config(settings)
    # Claimed first, so two people starting the same one again make one new start, not two.
    key = actions.ACTION_PREFIX + action_id
    if not redis.hsetnx(key, REPLACED_BY, "pending"):
        raise Refused(f"{action_id} was already started again as {(redis.hget(key, REPLACED_BY) or b'?').decode()}")
    try:
        new_id = queue_start(redis, settings, params["room_id"], params["output_url"], stream_key, replaces=action_id)
    except BaseException:
        redis.hdel(key, REPLACED_BY)
        raise
    redis.hset(key, REPLACED_BY, new_id)
    return {"action_id": new_id, "replaces": action_id, "room_id": params["room_id"],
            "message": f"queued a NEW start request for room {params['room_id']} ({new_id}), replacing {action_id}. "
                       f"If {action_id} did start a job after all, the room now has two: stop one in MetaStudio."}


def resolution(doc: dict[str, Any]) -> str | None:
    """What a person does about a failed live start whose outcome is unknown."""
    if doc.get("kind") != LIVE_START.kind or not actions.is_outcome_unknown(doc):
        return None
    action_id, room_id = doc.get("id"), (doc.get("params") or {}).get("room_id")
    if doc.get(REPLACED_BY):
        return f"started again as {doc[REPLACED_BY]}"
    return (f"MetaStudio may have started a live job for room {room_id}. Check its console (the room's smart-live "
            f"jobs) and this service's events for the room (GET /api/events?room_id={room_id}: a started job "
            f"calls back). A job runs: nothing to do. None: mediahook live start-again {action_id} "
            f"(POST /api/live/starts/{action_id}/start-again) sends one new start request.")

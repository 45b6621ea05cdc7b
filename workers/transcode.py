"""Transcode after upload: one Muducloud task per video and rung, polled to a final state.

Exactly once in effect: Muducloud's create is not idempotent, so the record
``mh:transcode:<video>:<rung>`` says ``creating`` *before* the call; an attempt that finds
``creating`` (a retry after a timeout, a worker killed between "create" and "record the id")
looks the task up on Muducloud before creating another. A per-rung lock keeps two attempts
from racing. A repeated callback, a replay or a retry of a submitted rung does nothing.

States: creating → submitted → waiting → transcoding → success | failed | deleted | timed_out;
a failed task is resubmitted up to ``resubmit_count`` times.
"""

from __future__ import annotations

import time
from typing import Any

from redis import Redis

from app.vendor_settings import RUNG_TEMPLATE_IDS, Transcoder
from workers import actions
from workers.actions import Skip, tracked
from workers.clients import muducloud
from workers.clients.http import VendorError
from workers.context import redis as current_redis
from workers.context import settings

TRANSCODE_PREFIX = "mh:transcode:"
VIDEO_RUNGS_PREFIX = "mh:video-rungs:"
LOCK_PREFIX = "mh:lock:transcode:"
FINAL_STATES = {"success", "failed", "deleted", "timed_out"}
TTL = 90 * 86400


def key(video_id: str, rung: str) -> str:
    return f"{TRANSCODE_PREFIX}{video_id}:{rung}"


# --- deciding what to submit ------------------------------------------------------------------

def needs_transcode(video: dict[str, Any]) -> bool:
    """Not yet transcoded, read tolerantly: the meaning of ``transcodeState`` depends on
    ``encrypt`` and the vendor's own example mixes the two numberings. Done: 1, or 2 with
    encryption on. Being transcoded by CDNetworks: 3. Everything else (2 without encryption,
    4 failed, 5, missing) still needs a transcode."""
    state, encrypt = video.get("transcodeState"), video.get("encrypt")
    if state == 1 or (state == 2 and encrypt == 1) or state == 3:
        return False
    return True


def source_height(video: dict[str, Any]) -> int | None:
    heights = [r.get("height") for r in video.get("videoResolutions") or [] if isinstance(r.get("height"), int)]
    return max(heights) if heights else None


def rungs_for(cfg: Transcoder, video: dict[str, Any]) -> list[str]:
    """The ladder, less rungs above the source's height when that is known."""
    height = source_height(video)
    return [r for r in cfg.ladder if r == "original" or height is None or int(r) <= height]


def origin_url(cfg: Transcoder, video: dict[str, Any]) -> str:
    fields = {k: ("" if v is None else str(v)) for k, v in video.items() if not isinstance(v, (list, dict))}
    try:
        return cfg.origin_url_template.format_map(fields)
    except KeyError as exc:
        raise ValueError(f"video {video.get('videoId')} has no {exc.args[0]} for origin_url_template") from None


def plan_upload(redis: Redis, cfg: Transcoder, videos: list[dict[str, Any]],
                event_id: str) -> tuple[list[str], list[str]]:
    """Queue a submit per video and rung; returns (action ids, notes on what was not queued)."""
    action_ids, notes = [], []
    for video in videos:
        video_id = video["videoId"]
        if not needs_transcode(video):
            notes.append(f"video {video_id}: transcodeState {video.get('transcodeState')} "
                         f"(encrypt {video.get('encrypt')}) means transcoded or transcoding; skipped")
            continue
        try:
            url = origin_url(cfg, video)
        except ValueError as exc:
            notes.append(str(exc))
            continue
        rungs = rungs_for(cfg, video)
        if not rungs:
            notes.append(f"video {video_id}: source height {source_height(video)} is below every rung of the ladder")
        for rung in rungs:
            action_id = f"transcode-{video_id}-{rung}"
            actions.enqueue(redis, action_id, submit, kind="transcode.submit", event_id=event_id, policy=cfg.http,
                            params={"action_id": action_id, "video_id": video_id, "rung": rung, "origin_url": url,
                                    "event_id": event_id})
            action_ids.append(action_id)
    return action_ids, notes


# --- the actions ----------------------------------------------------------------------------

def _state(redis: Redis, video_id: str, rung: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in redis.hgetall(key(video_id, rung)).items()}


def _set(redis: Redis, video_id: str, rung: str, **fields: Any) -> None:
    k = key(video_id, rung)
    pipe = redis.pipeline()
    pipe.hset(k, mapping={**{f: str(v) for f, v in fields.items()}, "video_id": video_id, "rung": rung,
                          "updated_at": repr(time.time())})
    pipe.expire(k, TTL)
    pipe.sadd(VIDEO_RUNGS_PREFIX + video_id, rung)
    pipe.expire(VIDEO_RUNGS_PREFIX + video_id, TTL)
    pipe.execute()


def submit(action_id: str, video_id: str, rung: str, origin_url: str, event_id: str | None = None) -> None:
    redis = current_redis()
    with tracked(redis, action_id) as out:
        cfg = settings().transcoder
        if cfg is None:
            raise Skip("[transcoder] is not configured")
        lock = redis.lock(LOCK_PREFIX + f"{video_id}:{rung}", timeout=4 * (cfg.http.connect_timeout +
                          cfg.http.read_timeout) + 30, blocking_timeout=cfg.http.read_timeout + 10)
        if not lock.acquire():
            raise RuntimeError(f"transcode {video_id}/{rung} is being submitted by another attempt")
        try:
            out["result"] = _submit(redis, cfg, video_id, rung, origin_url, event_id)
        finally:
            try:
                lock.release()
            except Exception:
                pass


def _submit(redis: Redis, cfg: Transcoder, video_id: str, rung: str, url: str, event_id: str | None) -> dict:
    state = _state(redis, video_id, rung)
    if state.get("task_id") and state.get("state") != "resubmitting":
        _schedule_poll(redis, cfg, video_id, rung, state["task_id"], int(state.get("poll_n", 0) or 0))
        raise Skip(f"already submitted as task {state['task_id']} ({state.get('state')})")
    template_id = RUNG_TEMPLATE_IDS[rung]
    task_id = None
    if state.get("state") == "creating":
        # An earlier attempt may have created it and died before recording the id.
        found = muducloud.find(cfg, url, template_id)
        task_id = found.id if found else None
    if task_id is None:
        _set(redis, video_id, rung, state="creating", origin_url=url, template_id=template_id,
             intent_at=repr(time.time()), event_id=event_id or "")
        try:
            task_id = muducloud.create(cfg, url, template_id)
        except VendorError as exc:
            if not exc.transient:
                _set(redis, video_id, rung, state="failed", error=f"{exc.code}: {exc.message}")
            raise
    _set(redis, video_id, rung, state="submitted", task_id=task_id, submitted_at=repr(time.time()),
         deadline=repr(time.time() + cfg.poll_deadline_seconds), poll_n=1, progress=0.0)
    _schedule_poll(redis, cfg, video_id, rung, task_id, 1)
    return {"task_id": task_id, "rung": rung, "template_id": template_id}


def _schedule_poll(redis: Redis, cfg: Transcoder, video_id: str, rung: str, task_id: str, n: int) -> None:
    delay = min(cfg.poll_initial_seconds * 2 ** max(n - 1, 0), cfg.poll_max_seconds)
    action_id = f"transcode-poll-{task_id}-{n}"
    actions.enqueue(redis, action_id, poll, kind="transcode.poll", event_id=None, policy=cfg.http, delay=delay,
                    params={"action_id": action_id, "video_id": video_id, "rung": rung, "n": n})


def poll(action_id: str, video_id: str, rung: str, n: int) -> None:
    redis = current_redis()
    with tracked(redis, action_id) as out:
        cfg = settings().transcoder
        if cfg is None:
            raise Skip("[transcoder] is not configured")
        state = _state(redis, video_id, rung)
        task_id = state.get("task_id")
        if not task_id or state.get("state") in FINAL_STATES or int(state.get("poll_n", 0) or 0) != n:
            raise Skip("superseded")
        task = muducloud.get(cfg, task_id)
        out["result"] = {"task_id": task_id, "status": task.state, "progress": task.progress}
        if task.status == 2:
            _set(redis, video_id, rung, state="success", progress=1.0, target_url=task.target_url or "", error="")
        elif task.status == 4:
            _set(redis, video_id, rung, state="deleted")
        elif task.status == 3:
            _failed(redis, cfg, state, video_id, rung, f"{task.error_code}: {task.error_info}")
        elif time.time() > float(state.get("deadline") or 0):
            _set(redis, video_id, rung, state="timed_out", error=f"not final after {cfg.poll_deadline_seconds:.0f}s")
        else:
            _set(redis, video_id, rung, state=task.state, progress=task.progress, poll_n=n + 1)
            _schedule_poll(redis, cfg, video_id, rung, task_id, n + 1)


def _failed(redis: Redis, cfg: Transcoder, state: dict[str, str], video_id: str, rung: str, error: str) -> None:
    resubmits = int(state.get("resubmits", 0) or 0)
    if resubmits >= cfg.resubmit_count:
        _set(redis, video_id, rung, state="failed", error=error)
        return
    failed_ids = ",".join(filter(None, [state.get("failed_task_ids"), state["task_id"]]))
    _set(redis, video_id, rung, state="resubmitting", resubmits=resubmits + 1, failed_task_ids=failed_ids,
         error=error)
    action_id = f"transcode-{video_id}-{rung}-resubmit{resubmits + 1}"
    actions.enqueue(redis, action_id, submit, kind="transcode.submit", event_id=state.get("event_id") or None,
                    policy=cfg.http, params={"action_id": action_id, "video_id": video_id, "rung": rung,
                                             "origin_url": state["origin_url"], "event_id": state.get("event_id")})


def video_transcodes(redis: Redis, video_id: str) -> dict[str, dict[str, str]]:
    rungs = sorted(m.decode() for m in redis.smembers(VIDEO_RUNGS_PREFIX + video_id))
    return {rung: _state(redis, video_id, rung) for rung in rungs}

"""Transcode after upload: one Muducloud task per video and rung, polled to a final state.

The rung record ``mh:transcode:<video>:<rung>`` is the truth about a rung: what the newest
callback wants (``wanted_url``), the task that serves it, and its state:

    queued → creating → submitted → waiting → transcoding → success | failed | deleted | timed_out
                                                  └─ failed at the vendor → resubmitting → creating …

Exactly once in effect: Muducloud's create is not idempotent, so the intent is recorded
(``unknown_since``) *before* the call and cleared once the answer says what happened. Only an
attempt that finds an intent whose outcome is unknown (a timeout, a lost answer, a 5xx, a worker
killed mid-call) reads the vendor's list, back to that intent's time only, and adopts what it
finds instead of creating again. A per-rung lock keeps two attempts from racing.

Every rung ends in a final state. Transient errors delay it (a submit is retried until the
rung's ``give_up_at``, a poll that errors is just polled again) but do not fail it; a bad
ending (failed, deleted, timed out) marks the rung's submit action failed, so it is listed
with the failed actions, and a requeue, a replay or a newer callback runs it again: that
adopts the old task if it is still alive or succeeded late, else creates a new one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from redis import Redis
from rq import get_current_job
from rq.job import Job

from app.core.vendor_config import RUNG_TEMPLATE_IDS, Transcoder
from workers import actions
from workers.actions import TRANSCODE_POLL, TRANSCODE_SUBMIT, Skip
from workers.clients import muducloud
from workers.clients.http import VendorError

log = logging.getLogger(__name__)

TRANSCODE_PREFIX = "mh:transcode:"
VIDEO_RUNGS_PREFIX = "mh:video-rungs:"
LOCK_NAME = "transcode:"  # mh:lock:transcode:<video>:<rung>
BAD_ENDINGS = {"failed", "deleted", "timed_out"}
FINAL_STATES = {"success", *BAD_ENDINGS}
TASK_STATES = {"submitted", "default", "waiting", "transcoding"}  # a live task is being polled
TTL = 90 * 86400
# How far before an unknown create's intent its task may carry a creation time: the vendor's
# clock and ours differ a little. The lookup reads the list back to (intent - slack) only.
LOOKUP_SLACK_SECONDS = 120.0
# Fields of a video record put into origin_url_template as they are (a host is not quoted).
UNQUOTED_FIELDS = {"publishDomain"}


def key(video_id: str, rung: str) -> str:
    return f"{TRANSCODE_PREFIX}{video_id}:{rung}"


def submit_action_id(video_id: str, rung: str) -> str:
    return f"transcode-{video_id}-{rung}"


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
    """The source URL from the template. Values go in URL-quoted (a videoId may hold spaces,
    dots or any character the schema accepts); the host does not."""
    fields = {k: ("" if v is None else str(v) if k in UNQUOTED_FIELDS else quote(str(v), safe=""))
              for k, v in video.items() if not isinstance(v, (list, dict))}
    try:
        return cfg.origin_url_template.format_map(fields)
    except KeyError as exc:
        raise ValueError(f"video {video.get('videoId')} has no {exc.args[0]} for origin_url_template") from None


def plan_upload(redis: Redis, cfg: Transcoder, videos: list[dict[str, Any]],
                event_id: str) -> tuple[list[str], list[str]]:
    """Queue a submit per video and rung; returns (action ids, notes on what was not queued).
    Each video is planned on its own: one that cannot be planned is noted, the others go on.

    An upload's rungs are read in one round trip, and the records of those to submit written
    with their submit actions in one transaction: a few videos of a few rungs each cost two
    round trips, not three per rung."""
    notes: list[str] = []
    asked: list[tuple[str, str, str]] = []  # (video id, rung, origin URL)
    for video in videos:
        try:
            more_rungs, more = _video_rungs(cfg, video)
        except Exception as exc:
            log.exception("video %r: not planned", video.get("videoId"))
            more_rungs, more = [], [_not_planned(video, exc)]
        asked += more_rungs
        notes += more
    if not asked:
        return [], notes
    pipe = redis.pipeline(transaction=False)
    for video_id, rung, _ in asked:
        pipe.hgetall(key(video_id, rung))
    states = [_decoded(raw) for raw in pipe.execute()]
    decided = [(video_id, rung, url, _want(cfg, video_id, rung, url, event_id, state))
               for (video_id, rung, url), state in zip(asked, states, strict=True)]
    submits = [(video_id, rung, url, want) for video_id, rung, url, want in decided if want.fields]
    if submits:
        # The records and the submits they name: all or none.
        pipe = redis.pipeline()
        _set_many(pipe, {(video_id, rung): want.fields for video_id, rung, _, want in submits})
        actions.enqueue_many(redis, [
            actions.ToQueue(want.action_id, TRANSCODE_SUBMIT, _submit_params(want.action_id, video_id, rung, url,
                                                                               event_id),
                            event_id=event_id, policy=cfg.http)
            for video_id, rung, url, want in submits], pipe=pipe)
    for video_id, rung, _, want in decided:
        if want.state is not None:
            _queue_resubmit(redis, cfg, video_id, rung, want.state)  # queued already, unless a worker died first
    return [want.action_id for *_, want in submits], notes + [want.note for *_, want in decided if want.note]


def _not_planned(video: dict[str, Any], exc: Exception) -> str:
    return f"video {video.get('videoId')!r}: not planned ({exc.__class__.__name__}: {exc})"


def _video_rungs(cfg: Transcoder, video: dict[str, Any]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The (video id, rung, origin URL) a video asks for; notes on what it does not."""
    video_id = video["videoId"]
    video_id.encode()  # a lone surrogate (JSON allows its escape) cannot be a Redis key: noted, not planned
    if not needs_transcode(video):
        return [], [f"video {video_id}: transcodeState {video.get('transcodeState')} "
                    f"(encrypt {video.get('encrypt')}) means transcoded or transcoding; skipped"]
    try:
        url = origin_url(cfg, video)
    except ValueError as exc:
        return [], [str(exc)]
    url.encode()  # the unquoted host may hold a lone surrogate too
    rungs = rungs_for(cfg, video)
    if not rungs:
        return [], [f"video {video_id}: source height {source_height(video)} is below every rung of the ladder"]
    return [(video_id, rung, url) for rung in rungs], []


@dataclass(frozen=True)
class Want:
    """What a callback asking for a rung does: write ``fields`` to its record and queue its submit
    ``action_id``; or queue the resubmit the record names (``state``); or nothing (``note``)."""

    action_id: str | None = None
    fields: dict[str, Any] | None = None
    state: dict[str, str] | None = None
    note: str | None = None


def _want(cfg: Transcoder, video_id: str, rung: str, url: str, event_id: str | None,
          state: dict[str, str]) -> Want:
    """Ask for a rung from a callback, given its record.

    A rung done or with a live task is left alone. Otherwise the newest callback's URL becomes
    the rung's ``wanted_url`` and the rung's submit action runs (again, if it ended badly)."""
    status = state.get("state")
    if status == "success":
        return Want(note=f"video {video_id} rung {rung}: already transcoded (task {state.get('task_id')})")
    if status == "resubmitting" and state.get("action_id"):
        return Want(action_id=state["action_id"], state=state,
                    note=f"video {video_id} rung {rung}: being resubmitted ({state['action_id']})")
    if status in TASK_STATES:
        return Want(note=f"video {video_id} rung {rung}: in progress (task {state.get('task_id')}, {status})")
    action_id = state.get("action_id") or submit_action_id(video_id, rung)
    fields: dict[str, Any] = {"wanted_url": url, "event_id": event_id or "", "action_id": action_id}
    if status is None:
        fields["state"] = "queued"
    if status is None or status in BAD_ENDINGS:
        fields["give_up_at"] = repr(time.time() + cfg.poll_deadline_seconds)
    return Want(action_id=action_id, fields=fields)


def _submit_params(action_id: str, video_id: str, rung: str, url: str, event_id: str | None) -> dict[str, Any]:
    return {"action_id": action_id, "video_id": video_id, "rung": rung, "origin_url": url, "event_id": event_id}


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# --- the rung record --------------------------------------------------------------------------

def _state(redis: Redis, video_id: str, rung: str) -> dict[str, str]:
    return _decoded(redis.hgetall(key(video_id, rung)))


def _decoded(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def _mapping(video_id: str, rung: str, fields: dict[str, Any]) -> dict[str, str]:
    return {**{f: str(v) for f, v in fields.items()}, "video_id": video_id, "rung": rung,
            "updated_at": repr(time.time())}


def _set(redis: Redis, video_id: str, rung: str, **fields: Any) -> None:
    """Write fields of a rung's record, keeping it (and the video's list of rungs) for ``TTL``."""
    pipe = redis.pipeline()
    _set_many(pipe, {(video_id, rung): fields})
    pipe.execute()


def _set_many(pipe: Any, writes: dict[tuple[str, str], dict[str, Any]]) -> None:
    """``_set`` for several rungs, into ``pipe`` (each video's rung list added to once)."""
    by_video: dict[str, list[str]] = {}
    for (video_id, rung), fields in writes.items():
        pipe.hset(key(video_id, rung), mapping=_mapping(video_id, rung, fields))
        pipe.expire(key(video_id, rung), TTL)
        by_video.setdefault(video_id, []).append(rung)
    for video_id, rungs in by_video.items():
        pipe.sadd(VIDEO_RUNGS_PREFIX + video_id, *rungs)
        pipe.expire(VIDEO_RUNGS_PREFIX + video_id, TTL)


def _update(redis: Redis, video_id: str, rung: str, **fields: Any) -> None:
    """A later write of a submit attempt, after its first (``_set``, which kept the record and
    the video's rung list for ``TTL``): the fields only, one command."""
    redis.hset(key(video_id, rung), mapping=_mapping(video_id, rung, fields))


def _end_badly(redis: Redis, video_id: str, rung: str, state: dict[str, str], ending: str, code: Any,
               message: str) -> None:
    """A bad final state: listed with the failed actions (its submit action), then kept on the
    rung (in that order: a worker dying in between leaves the poll to run again, not a rung that
    ended badly and is listed nowhere)."""
    action_id = state.get("action_id") or submit_action_id(video_id, rung)
    actions.fail_later(redis, action_id, {
        "vendor": muducloud.VENDOR, "code": code, "message": message, "status": None, "transient": False,
        "rung_state": ending, "task_id": state.get("task_id") or None})
    _set(redis, video_id, rung, state=ending, error=f"{code}: {message}" if ending == "failed" else message,
         error_code="" if code is None else code, error_message=message, ended_at=repr(time.time()))
    log.warning("transcode %s/%s ended %s (task %s): %s %s", video_id, rung, ending, state.get("task_id") or "-",
                code, message)


def _retire(state: dict[str, str]) -> str:
    """failed_task_ids with the rung's current task added (it is being replaced)."""
    ids = [i for i in (state.get("failed_task_ids") or "").split(",") if i]
    if state.get("task_id") and state["task_id"] not in ids:
        ids.append(state["task_id"])
    return ",".join(ids)


# --- submitting -------------------------------------------------------------------------------

def submit(action_id: str, video_id: str, rung: str, origin_url: str | None = None,
           event_id: str | None = None) -> None:
    """Bring the rung to a live (or finished) task. ``origin_url`` is only a fallback: what is
    sent is the rung record's ``wanted_url``, the newest callback's, read now."""
    with actions.running(action_id, TRANSCODE_SUBMIT) as run:
        try:
            # One attempt per rung at a time; a killed holder's lock lapses within the lock's short TTL.
            with run.locked(LOCK_NAME + f"{video_id}:{rung}"):
                run.out["result"] = _submit(run.redis, run.cfg, action_id, video_id, rung, origin_url)
        except Skip:
            raise
        except Exception as exc:
            # Busy (the lock) too: retried like any transient error, until the rung's give_up_at.
            _after_error(run.redis, run.cfg, get_current_job(), video_id, rung, exc)
            raise


def _after_error(redis: Redis, cfg: Transcoder, job: Job | None, video_id: str, rung: str,
                 exc: Exception) -> None:
    """Transient errors are retried until the rung's ``give_up_at`` (past RQ's attempt count,
    at the schedule's longest interval); what ends the submit for good ends the rung failed."""
    state = _state(redis, video_id, rung)
    transient = not isinstance(exc, VendorError) or exc.transient
    give_up_at = float(state.get("give_up_at") or 0) or time.time() + cfg.poll_deadline_seconds
    if transient and job is not None and time.time() < give_up_at and not job.retries_left:
        job.retries_left = 1
        if not job.retry_intervals:
            job.retry_intervals = [max(1, round(cfg.http.retry_max_seconds))]
    if transient and job is not None and job.retries_left:
        return
    if state.get("state") not in FINAL_STATES:
        code = exc.code if isinstance(exc, VendorError) else exc.__class__.__name__
        message = exc.message if isinstance(exc, VendorError) else str(exc)[:500]
        # The action itself fails now (tracked lists it): only the rung's state is set here.
        _set(redis, video_id, rung, state="failed", error=f"{code}: {message}", error_code=code or "",
             error_message=message, ended_at=repr(time.time()))


def _submit(redis: Redis, cfg: Transcoder, action_id: str, video_id: str, rung: str,
            fallback_url: str | None) -> dict:
    state = _state(redis, video_id, rung)
    status = state.get("state")
    url = state.get("wanted_url") or fallback_url
    if not url:
        raise Skip("no origin_url for this rung")
    if status == "success":
        raise Skip(f"already transcoded as task {state.get('task_id')}")
    if state.get("task_id") and status in TASK_STATES:
        _schedule_poll(redis, cfg, video_id, rung, state["task_id"], int(state.get("poll_n", 0) or 0))
        raise Skip(f"already submitted as task {state['task_id']} ({status})")
    template_id = RUNG_TEMPLATE_IDS[rung]
    fields: dict[str, Any] = {"action_id": action_id, "wanted_url": url}
    if status in BAD_ENDINGS:
        # Asked again after a bad ending (a replay, a requeue, a newer callback): a fresh budget.
        fields.update(auto_left=cfg.resubmit_count, give_up_at=repr(time.time() + cfg.poll_deadline_seconds))
        if state.get("task_id"):
            adopted = _adopt_old_task(redis, cfg, video_id, rung, state, url, fields)
            if adopted is not None:
                return adopted
    elif not state.get("give_up_at"):
        fields["give_up_at"] = repr(time.time() + cfg.poll_deadline_seconds)
    if state.get("task_id"):
        fields.update(failed_task_ids=_retire(state), task_id="")
    state.update({k: str(v) for k, v in fields.items()})
    if not state.get("unknown_since"):
        return _create(redis, cfg, video_id, rung, state, url, template_id, fields)  # written with the intent
    _set(redis, video_id, rung, **fields)
    adopted = _adopt_unknown(redis, cfg, video_id, rung, state, url, template_id)
    if adopted is not None:
        return adopted
    return _create(redis, cfg, video_id, rung, state, url, template_id)


def _adopt_old_task(redis: Redis, cfg: Transcoder, video_id: str, rung: str, state: dict[str, str], url: str,
                    fields: dict[str, Any]) -> dict | None:
    """After a bad ending, the old task may still be alive (timed out on our side) or may have
    succeeded late: adopt it if it serves the wanted URL; delete it if it is alive for another."""
    try:
        task = muducloud.get(cfg, state["task_id"])
    except VendorError as exc:
        if exc.transient:
            raise
        return None  # gone (not found): create anew
    if task.status in muducloud.LIVE | {muducloud.SUCCESS} and task.origin_url == url:
        _set(redis, video_id, rung, **fields)
        return _record_task(redis, cfg, video_id, rung, task, adopted="late" if task.status == muducloud.SUCCESS
                            else "alive")
    if task.status in muducloud.LIVE:
        _discard(cfg, task.id)  # serves an older callback's URL: never left running untracked
    return None


def _adopt_unknown(redis: Redis, cfg: Transcoder, video_id: str, rung: str, state: dict[str, str], url: str,
                   template_id: int) -> dict | None:
    """An earlier create's outcome is unknown: read the vendor's list back to its intent."""
    since = float(state["unknown_since"]) - LOOKUP_SLACK_SECONDS
    known = set(filter(None, (state.get("failed_task_ids") or "").split(",")))
    urls = {url, state.get("origin_url") or url}
    candidates = [t for u in urls for t in muducloud.find_since(cfg, u, template_id, since)
                  if t.id not in known and t.status in muducloud.LIVE | {muducloud.SUCCESS}]
    keep = next((t for t in reversed(candidates) if t.origin_url == url), None)  # the oldest for the wanted URL
    for task in candidates:
        if task is not keep and task.status in muducloud.LIVE:
            _discard(cfg, task.id)  # a second task, or one for an older URL: not left running
    if keep is None:
        return None
    # An even earlier create (timed out, still in flight) may land later: look once more when final.
    return _record_task(redis, cfg, video_id, rung, keep, adopted="found", sweep_since=state["unknown_since"])


def _discard(cfg: Transcoder, task_id: str) -> None:
    """Delete a task we will not use; one already gone is fine."""
    try:
        muducloud.delete(cfg, task_id)
    except VendorError as exc:
        if exc.transient:
            raise
        log.warning("could not delete Muducloud task %s: %s", task_id, exc)


def _not_done(exc: VendorError) -> bool:
    """The vendor certainly did not create: it said no, it throttled us (429), it was
    unavailable (503), or the connection was never made. Anything else may have created a task."""
    if not exc.transient:
        return True
    if exc.status in (429, 503):
        return True
    return exc.status is None and not exc.maybe_done


def _create(redis: Redis, cfg: Transcoder, video_id: str, rung: str, state: dict[str, str], url: str,
            template_id: int, fields: dict[str, Any] | None = None) -> dict:
    """Create the rung's task. ``fields``: the attempt's first write to the record, made with the
    intent (None: the record was written earlier in this attempt, before a lookup)."""
    earlier_unknown = state.get("unknown_since") or ""
    # The intent, before the call and in a round trip of its own: if we die or the answer is
    # lost, the next attempt looks it up.
    intent = dict(state="creating", origin_url=url, template_id=template_id, intent_at=repr(time.time()),
                  unknown_since=earlier_unknown or repr(time.time()))
    if fields is None:
        _update(redis, video_id, rung, **intent)
    else:
        _set(redis, video_id, rung, **fields, **intent)
    try:
        task_id = muducloud.create(cfg, url, template_id)
    except VendorError as exc:
        after: dict[str, Any] = {}
        if _not_done(exc):
            after["unknown_since"] = earlier_unknown
        if not exc.transient:
            after.update(state="failed", error=f"{exc.code}: {exc.message}",
                         error_code="" if exc.code is None else exc.code, error_message=exc.message,
                         ended_at=repr(time.time()))
        if after:
            _update(redis, video_id, rung, **after)
        raise
    return _record_task(redis, cfg, video_id, rung, muducloud.Task(
        id=task_id, status=0, progress=0.0, origin_url=url, task_config_temp_id=template_id, target_url=None,
        error_code=None, error_info=None), sweep_since=earlier_unknown)


def _record_task(redis: Redis, cfg: Transcoder, video_id: str, rung: str, task: muducloud.Task,
                 adopted: str | None = None, sweep_since: str = "") -> dict:
    """The rung now has ``task``: poll it (or, succeeded already, finish). Called after the
    attempt's first write to the record (``_update`` then)."""
    now = time.time()
    fields: dict[str, Any] = {"task_id": task.id, "origin_url": task.origin_url or "", "submitted_at": repr(now),
                              "unknown_since": "", "deadline": repr(now + cfg.poll_deadline_seconds)}
    if sweep_since:
        # An earlier create of this rung may still land at the vendor: looked for once the rung is final.
        fields["sweep_since"] = sweep_since
    result = {"task_id": task.id, "rung": rung, "template_id": task.task_config_temp_id}
    if adopted:
        result["adopted"] = adopted
    if task.status == muducloud.SUCCESS and not sweep_since:
        _update(redis, video_id, rung, **fields, state="success", progress=1.0, target_url=task.target_url or "",
                error="", ended_at=repr(now))
        return result
    # (A task already done but with a sweep due is polled once, and the poll sweeps.)
    state = "submitted" if (task.status == 0 and not adopted) or task.status == muducloud.SUCCESS else task.state
    # The task and its first poll, all or none: a kill before leaves the intent, which the retried
    # submit looks up (and adopts the task, and schedules its poll).
    pipe = redis.pipeline()
    pipe.hset(key(video_id, rung), mapping=_mapping(video_id, rung, {**fields, "state": state, "poll_n": 1,
                                                                     "progress": task.progress}))
    _schedule_poll(redis, cfg, video_id, rung, task.id, 1, pipe)
    return result


# --- polling ----------------------------------------------------------------------------------

def _schedule_poll(redis: Redis, cfg: Transcoder, video_id: str, rung: str, task_id: str, n: int,
                   pipe: Any = None) -> None:
    """Schedule poll ``n`` of the task (once: its id names the task and n), in one round trip:
    ``pipe``'s, with the writes the caller put in it, or its own."""
    delay = min(cfg.poll_initial_seconds * 2 ** max(n - 1, 0), cfg.poll_max_seconds)
    action_id = f"transcode-poll-{task_id}-{n}"
    params = {"action_id": action_id, "video_id": video_id, "rung": rung, "n": n, "task_id": task_id}
    actions.enqueue_many(redis, [actions.ToQueue(action_id, TRANSCODE_POLL, params, policy=cfg.http, delay=delay)],
                         pipe=pipe)


def poll(action_id: str, video_id: str, rung: str, n: int, task_id: str | None = None) -> None:
    """Poll the rung's task once. Poll n runs unless a later poll already ran (``poll_n`` > n):
    the next poll is scheduled in the transaction that moves ``poll_n``, so a worker killed
    before it leaves poll n the latest, run again, and the chain never forks in two."""
    with actions.running(action_id, TRANSCODE_POLL) as run:
        redis, cfg = run.redis, run.cfg
        state = _state(redis, video_id, rung)
        current = state.get("task_id")
        if state.get("state") == "resubmitting" and state.get("action_id") and (not task_id or task_id == current):
            _queue_resubmit(redis, cfg, video_id, rung, state)  # in case this poll died before it did
            raise Skip("the task failed; resubmitting")
        if (not current or state.get("state") not in TASK_STATES or (task_id and task_id != current)
                or int(state.get("poll_n", 0) or 0) > n):
            raise Skip("superseded")
        run.out["result"] = _poll(redis, cfg, video_id, rung, state, n)


def _poll(redis: Redis, cfg: Transcoder, video_id: str, rung: str, state: dict[str, str], n: int) -> dict:
    task_id = state["task_id"]
    past_deadline = time.time() > float(state.get("deadline") or 0)
    try:
        task = muducloud.get(cfg, task_id)
        if task.status in muducloud.FINAL and state.get("sweep_since"):
            _sweep(redis, cfg, video_id, rung, state)
    except VendorError as exc:
        if exc.transient and not past_deadline:
            # A poll that errors is polled again; it is no failure of the rung.
            _next_poll(redis, cfg, video_id, rung, task_id, n, poll_error=f"{exc.code}: {exc.message}")
            return {"task_id": task_id, "poll_error": exc.message, "next_poll": n + 1}
        if exc.transient:
            _end_badly(redis, video_id, rung, state, "timed_out", "timed_out",
                       f"not final after {cfg.poll_deadline_seconds:.0f}s (last poll: {exc.message})")
        elif exc.code == muducloud.NOT_FOUND:
            _end_badly(redis, video_id, rung, state, "deleted", exc.code, exc.message)
        else:
            _end_badly(redis, video_id, rung, state, "failed", exc.code, exc.message)
        return {"task_id": task_id, "error": exc.message}
    result = {"task_id": task_id, "status": task.state, "progress": task.progress}
    if task.status == muducloud.SUCCESS:
        _set(redis, video_id, rung, state="success", progress=1.0, target_url=task.target_url or "", error="",
             ended_at=repr(time.time()))
    elif task.status == muducloud.DELETED:
        _end_badly(redis, video_id, rung, state, "deleted", "deleted", f"task {task_id} was deleted at Muducloud")
    elif task.status == muducloud.FAILED:
        _task_failed(redis, cfg, video_id, rung, state, task)
    elif past_deadline:
        _end_badly(redis, video_id, rung, state, "timed_out", "timed_out",
                   f"not final after {cfg.poll_deadline_seconds:.0f}s")
    else:
        _next_poll(redis, cfg, video_id, rung, task_id, n, state=task.state, progress=task.progress, poll_error="")
    return result


def _next_poll(redis: Redis, cfg: Transcoder, video_id: str, rung: str, task_id: str, n: int, **fields: Any) -> None:
    """Schedule poll n + 1 and move the record's ``poll_n`` to it, in one transaction."""
    pipe = redis.pipeline()
    _set_many(pipe, {(video_id, rung): {**fields, "poll_n": n + 1}})
    _schedule_poll(redis, cfg, video_id, rung, task_id, n + 1, pipe)


def _sweep(redis: Redis, cfg: Transcoder, video_id: str, rung: str, state: dict[str, str]) -> None:
    """A create whose outcome was unknown may have landed after the task we kept was made:
    delete any such second task, so that none runs untracked."""
    template_id = int(state.get("template_id") or RUNG_TEMPLATE_IDS[rung])
    since = float(state["sweep_since"]) - LOOKUP_SLACK_SECONDS
    for task in muducloud.find_since(cfg, state.get("origin_url") or "", template_id, since):
        if task.id != state["task_id"] and task.status in muducloud.LIVE | {muducloud.SUCCESS}:
            _discard(cfg, task.id)
            log.warning("transcode %s/%s: deleted duplicate task %s", video_id, rung, task.id)
    _set(redis, video_id, rung, sweep_since="")


def _task_failed(redis: Redis, cfg: Transcoder, video_id: str, rung: str, state: dict[str, str],
                 task: muducloud.Task) -> None:
    """The vendor failed the task: resubmit while the rung's automatic resubmits last."""
    code, message = task.error_code, task.error_info or "transcoding failed"
    left = int(state["auto_left"]) if state.get("auto_left") else cfg.resubmit_count
    if left <= 0:
        _end_badly(redis, video_id, rung, state, "failed", code, message)
        return
    resubmits = int(state.get("resubmits", 0) or 0) + 1
    action_id = f"{submit_action_id(video_id, rung)}-resubmit{resubmits}"
    fields = dict(state="resubmitting", resubmits=resubmits, auto_left=left - 1, error=f"{code}: {message}",
                  action_id=action_id, give_up_at=repr(time.time() + cfg.poll_deadline_seconds))
    _set(redis, video_id, rung, **fields)
    _queue_resubmit(redis, cfg, video_id, rung, {**state, **{k: str(v) for k, v in fields.items()}})


def _queue_resubmit(redis: Redis, cfg: Transcoder, video_id: str, rung: str, state: dict[str, str]) -> None:
    """Queue the rung's resubmit (once: its id is the rung's ``action_id``). Also called when a
    rung is found ``resubmitting`` (a worker killed between recording that and queueing it)."""
    action_id = state["action_id"]
    url = state.get("wanted_url") or state.get("origin_url") or ""
    event_id = state.get("event_id") or None
    actions.enqueue(redis, action_id, TRANSCODE_SUBMIT, event_id=event_id, policy=cfg.http,
                    params=_submit_params(action_id, video_id, rung, url, event_id))


def video_transcodes(redis: Redis, video_id: str) -> dict[str, dict[str, str]]:
    if not _encodable(video_id):
        return {}  # never planned (see _plan_video)
    rungs = sorted(m.decode() for m in redis.smembers(VIDEO_RUNGS_PREFIX + video_id))
    return {rung: _state(redis, video_id, rung) for rung in rungs}

"""What the soak looks at: is everything drained, and what do the vendors (the simulators) and
mediahook's own records show once it is.

Side effects are read at the simulators, never from mediahook's records: a second live task or
a converter left on is what a vendor would bill or stream, whatever our records say. Only
"is it final" questions (events, rungs, live starts) are read from Redis.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.registry import DeferredJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from app.core.config import Settings
from app.core.events import EVENT_PREFIX, job_id_for
from app.core.queues import QUEUES
from app.core.vendor_config import RUNG_TEMPLATE_IDS
from workers import actions, transcode
from workers.clients.koophone import expand_profile
from workers.timeline import LIVE_PREFIX

EVENT_DONE = {b"processed", b"ignored", b"failed"}
ACTION_DONE = {b"succeeded", b"skipped", b"failed"}
LIVE_TASK = {0, 1, 2}  # Muducloud waiting, transcoding, success: a task that is or will be a rendition
HTTP = requests.Session()
HTTP.trust_env = False  # loopback or a staging host named on the command line: never a proxy


@dataclass
class Sent:
    """What the soak knows of one planned request after sending it."""

    n: int
    kind: str
    event_ids: set[str] = field(default_factory=set)
    acked: bool = False
    attempts: int = 0
    signed: int | None = None
    action_id: str | None = None  # a live start's


# --- draining ---------------------------------------------------------------------------------

def rq_counts(redis: Redis) -> dict[str, int]:
    """Jobs per RQ state. Read only: RQ's registry ``count`` would clean up first (fail or
    retry abandoned jobs), which is the workers' business, not the observer's."""
    out = {"queued jobs": 0, "running jobs": 0, "scheduled jobs": 0, "deferred jobs": 0}
    for name in QUEUES:
        q = Queue(name, connection=redis)
        out["queued jobs"] += q.count
        out["running jobs"] += StartedJobRegistry(queue=q).get_job_count(cleanup=False)
        out["scheduled jobs"] += ScheduledJobRegistry(queue=q).get_job_count(cleanup=False)
        out["deferred jobs"] += DeferredJobRegistry(queue=q).get_job_count(cleanup=False)
    return out


def live_job_ids(redis: Redis) -> set[str]:
    """Every RQ job still queued, running, scheduled or deferred."""
    ids: set[str] = set()
    for name in QUEUES:
        q = Queue(name, connection=redis)
        ids.update(q.get_job_ids())
        for registry in (StartedJobRegistry, ScheduledJobRegistry, DeferredJobRegistry):
            ids.update(registry(queue=q).get_job_ids(cleanup=False))
    return ids


def event_statuses(redis: Redis, event_ids: list[str]) -> dict[str, bytes | None]:
    """Each event's status; a re-delivery recorded as a ``duplicate`` (it was spooled apart from
    its original) has the status of the original it names."""
    pipe = redis.pipeline(transaction=False)
    for event_id in event_ids:
        pipe.hmget(EVENT_PREFIX + event_id, "status", "duplicate_of")
    out: dict[str, bytes | None] = {}
    originals: dict[str, str] = {}
    for event_id, (status, original) in zip(event_ids, pipe.execute(), strict=True):
        out[event_id] = status
        if status == b"duplicate" and original:
            originals[event_id] = original.decode()
    if originals:
        pipe = redis.pipeline(transaction=False)
        for original in originals.values():
            pipe.hget(EVENT_PREFIX + original, "status")
        out.update(zip(originals, pipe.execute(), strict=True))
    return out


def expected_rungs(settings: Settings, videos: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(video, rung) for every video of an acknowledged upload, per the config's ladder."""
    if settings.transcoder is None:
        return []
    return [(video_id, rung) for video_id, video in sorted(videos.items())
            for rung in transcode.rungs_for(settings.transcoder, video)]


def rung_states(redis: Redis, rungs: list[tuple[str, str]]) -> list[str | None]:
    pipe = redis.pipeline(transaction=False)
    for video_id, rung in rungs:
        pipe.hget(transcode.key(video_id, rung), "state")
    return [v.decode() if v else None for v in pipe.execute()]


def action_statuses(redis: Redis, action_ids: list[str]) -> list[bytes | None]:
    pipe = redis.pipeline(transaction=False)
    for action_id in action_ids:
        pipe.hget(actions.ACTION_PREFIX + action_id, "status")
    return pipe.execute()


def pending(redis: Redis, callbacks: list[set[str]], rungs: list[tuple[str, str]], live_actions: list[str],
            spool_dir: Path | None) -> dict[str, int]:
    """What is not finished yet; all zeros means drained. ``callbacks``: the event ids each
    acknowledged callback was given (a re-delivery spooled apart from its original gets an id
    of its own, which has no record once the original is drained: one done id is enough).
    Raises RedisError while Redis is down."""
    out = rq_counts(redis)
    statuses = event_statuses(redis, sorted({i for ids in callbacks for i in ids}))
    out["events not processed"] = sum(1 for ids in callbacks if not any(statuses[i] in EVENT_DONE for i in ids))
    out["rungs not final"] = sum(1 for s in rung_states(redis, rungs) if s not in transcode.FINAL_STATES)
    out["live starts not final"] = sum(1 for s in action_statuses(redis, live_actions) if s not in ACTION_DONE)
    if spool_dir is not None:
        out["spooled"] = len(list(spool_dir.glob("*.event.json"))) if spool_dir.exists() else 0
    return out


# --- the simulators ---------------------------------------------------------------------------

def set_faults(sim_url: str, faults: dict) -> None:
    HTTP.put(f"{sim_url}/_sim/faults", json=faults, timeout=10).raise_for_status()


def fault_config(rate: float, phase: int) -> dict:
    """~``rate`` of every vendor call fails transiently: 5xx, 429 with Retry-After, a dropped
    connection, or a read timeout (the answer comes after 3.5 s). Every other phase, failures of
    the calls that change something (create, update, apply, start) happen after the vendor did
    it (the answer is lost), and the 5xx status cycles through 500, 502, 503, 504."""
    if rate <= 0:
        return {}
    after = phase % 2 == 1

    def rule(after_effect: bool) -> dict:
        return {"error_rate": rate * 0.45, "error_status": (500, 502, 503, 504)[phase % 4], "rate_429": rate * 0.2,
                "retry_after_s": 1, "drop_rate": rate * 0.2, "timeout_rate": rate * 0.15, "timeout_sleep_s": 3.5,
                "latency_ms": [0, 20], "after_effect": after_effect}

    writes = {"muducloud": ("create-transcode",), "flighthub": ("create", "update"), "koophone": ("video-setting",),
              "metastudio": ("start-job",)}
    return {vendor: {**rule(False), **{ep: rule(after) for ep in eps}} for vendor, eps in writes.items()}


def muducloud_tasks(sim_url: str) -> list[dict]:
    tasks, page = [], 1
    while True:
        r = HTTP.get(f"{sim_url}/transcoding/api/get-transcodes", params={"page": page, "limit": 100}, timeout=10)
        body = r.json()
        tasks += body["results"]
        if len(tasks) >= body["count"] or not body["results"]:
            return tasks
        page += 1


def flighthub_converters(sim_url: str, settings: Settings) -> list[dict]:
    token = settings.flighthub.user_token if settings.flighthub else ""
    r = HTTP.get(f"{sim_url}/openapi/v0.1/live-stream/converter", timeout=10,
                 headers={"X-User-Token": token, "X-Request-Id": "00000000-0000-4000-8000-000000000000"})
    return r.json()["data"]["members"]


def koophone_settings(sim_url: str, instance_id: str) -> list | None:
    r = HTTP.get(f"{sim_url}/_sim/koophone/instances/{instance_id}", timeout=10)
    return r.json()["instance_settings"] if r.status_code == 200 else None


def metastudio_jobs(sim_url: str) -> list[dict]:
    return HTTP.get(f"{sim_url}/_sim/metastudio/jobs", timeout=10).json()["jobs"]


# --- the figures ------------------------------------------------------------------------------

def lost(redis: Redis, sent: list[Sent]) -> tuple[int, int, int, list[str]]:
    """(lost, still queued with a live job, event job failed for good, examples). A callback is
    lost when none of the event ids its acknowledged deliveries were given has a record, or its
    record is still ``queued`` and its job is in no queue or registry (nothing will ever run it)."""
    # A re-delivery's event ids are kept with its original.
    acked = [s for s in sent if s.acked and s.kind not in ("live", "redelivery")]
    ids = sorted({i for s in acked for i in s.event_ids})
    statuses = event_statuses(redis, ids)
    live = live_job_ids(redis)
    n_lost, n_waiting, n_failed, examples = 0, 0, 0, []
    for s in acked:
        known = [statuses.get(i) for i in s.event_ids if statuses.get(i) is not None]
        if known and all(st == b"failed" for st in known):
            n_failed += 1
        if not known:
            n_lost += 1
            examples.append(f"#{s.n} ({s.kind}) events {sorted(s.event_ids)}: no record")
        elif all(st == b"queued" for st in known):
            if any(job_id_for(i) in live for i in s.event_ids):
                n_waiting += 1
            else:
                n_lost += 1
                examples.append(f"#{s.n} ({s.kind}) events {sorted(s.event_ids)}: queued, no job")
    return n_lost, n_waiting, n_failed, examples[:5]


def duplicates(sim_url: str, settings: Settings, origins: dict[str, str], converter_names: list[str],
               live_urls: list[str]) -> dict[str, Any]:
    """Side effects made more than once, at the simulators: Muducloud tasks not failed or deleted
    per video and rung (``origins``: origin_url → video id, template id → rung), converters per
    binding name, MetaStudio jobs per start request (its unique output URL)."""
    rung_of = {v: k for k, v in RUNG_TEMPLATE_IDS.items()}
    tasks = Counter((t["origin_url"], t["task_config_temp_id"]) for t in muducloud_tasks(sim_url)
                    if t["origin_url"] in origins and t["status"] in LIVE_TASK)
    extra_tasks = {f"{origins[url]}/{rung_of.get(tid, tid)}": n for (url, tid), n in tasks.items() if n > 1}
    names = Counter(m["converter_name"] for m in flighthub_converters(sim_url, settings))
    extra_conv = {name: names[name] for name in converter_names if names[name] > 1}
    jobs = Counter((j.get("body") or {}).get("output_urls", [None])[0] for j in metastudio_jobs(sim_url))
    extra_jobs = {url: jobs[url] for url in live_urls if jobs[url] > 1}
    return {"transcode tasks": sum(n - 1 for n in extra_tasks.values()),
            "converters": sum(n - 1 for n in extra_conv.values()),
            "live jobs": sum(n - 1 for n in extra_jobs.values()),
            "examples": [*list(extra_tasks.items())[:3], *list(extra_conv.items())[:3], *list(extra_jobs.items())[:3]],
            "live starts without a job": sum(1 for url in live_urls if jobs[url] == 0)}


def wrong_converters(sim_url: str, settings: Settings, expected: dict) -> tuple[int, int, list[str]]:
    """(wrong, judged, examples): converters whose auto_push_stream differs from the expectation.
    A converter never created counts as off."""
    if settings.flighthub is None:
        return 0, 0, []
    members = flighthub_converters(sim_url, settings)
    by_name = {m["converter_name"]: m for m in members}
    by_id = {m["converter_id"]: m for m in members}
    wrong, judged, examples = 0, 0, []
    for binding in settings.flighthub.bindings:
        exp = expected.get(binding.room_id)
        if exp is None or exp.converter_on is None:
            continue
        judged += 1
        member = by_id.get(binding.converter_id) if binding.converter_id else \
            by_name.get((binding.create or {}).get("converter_name"))
        actual = bool(member and member["auto_push_stream"])
        if actual != exp.converter_on:
            wrong += 1
            examples.append(f"room {binding.room_id} job {exp.job}: converter {'on' if actual else 'off'}, "
                            f"expected {'on' if exp.converter_on else 'off'}")
    return wrong, judged, examples[:5]


def wrong_phones(sim_url: str, settings: Settings, expected: dict) -> tuple[int, int, list[str]]:
    """(wrong, judged, examples): phones whose last applied settings are not their expected profile."""
    if settings.koophone is None:
        return 0, 0, []
    wanted = {name: expand_profile(spec) for name, spec in settings.koophone.profiles.items()}
    wrong, judged, examples = 0, 0, []
    for i, binding in enumerate(settings.koophone.bindings):
        exp = expected.get(binding.room_id)
        profile = exp.profiles.get(i) if exp else None
        if profile is None:
            continue
        for instance in binding.instance_ids:
            judged += 1
            applied = koophone_settings(sim_url, instance)
            have = next((name for name, spec in wanted.items() if spec == applied), "none" if applied is None else "?")
            if have != profile:
                wrong += 1
                examples.append(f"room {binding.room_id} job {exp.job}: phone {instance} {have}, expected {profile}")
    return wrong, judged, examples[:5]


def wrong_timelines(redis: Redis, expected: dict[str, int]) -> tuple[int, list[str]]:
    """Jobs whose script timeline (``mh:live:<job>``) does not show their last script switch."""
    jobs = sorted(expected)
    pipe = redis.pipeline(transaction=False)
    for job in jobs:
        pipe.hget(LIVE_PREFIX + job, "shoot_script_sequence_no")
    wrong = [(job, have.decode() if have else None) for job, have in zip(jobs, pipe.execute(), strict=True)
             if (have.decode() if have else None) != str(expected[job])]
    return len(wrong), [f"job {job}: script {have}, expected {expected[job]}" for job, have in wrong[:5]]


def rungs(redis: Redis, wanted: list[tuple[str, str]]) -> dict[str, Any]:
    states = rung_states(redis, wanted)
    counts = Counter(s or "missing" for s in states)
    not_final = sum(n for s, n in counts.items() if s not in transcode.FINAL_STATES)
    return {"not final": not_final, "failed": sum(n for s, n in counts.items()
                                                  if s in transcode.FINAL_STATES and s != "success"),
            "states": dict(counts)}


def listed_failed(redis: Redis) -> int:
    try:
        return int(redis.zcard(actions.FAILED_INDEX))
    except RedisError:
        return -1


def origin_map(settings: Settings, videos: dict[str, dict[str, Any]]) -> dict[str, str]:
    if settings.transcoder is None:
        return {}
    return {transcode.origin_url(settings.transcoder, v): vid for vid, v in videos.items()}

"""Queue names and job function paths, shared by the web side (which enqueues) and the workers,
and the figures of each queue that /metrics, the overview and the console show."""

from __future__ import annotations

import time
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job
from rq.utils import utcparse

EVENTS_QUEUE = "mediahook-events"
ACTIONS_QUEUE = "mediahook-actions"
# A worker takes events first: deciding actions is quick, and it keeps callbacks flowing.
QUEUES = (EVENTS_QUEUE, ACTIONS_QUEUE)

# Referenced by dotted path, so the receive path enqueues without loading worker code.
PROCESS_EVENT = "workers.process.process_event"

# Actions failed for good (zset: action id -> when): the console, the API and /metrics read it.
FAILED_INDEX = "mh:actions:failed"


def _enqueued_at(raw: bytes | None) -> float | None:
    try:
        return utcparse(raw.decode()).timestamp() if raw else None
    except ValueError:
        return None


def queue_figures(redis: Redis) -> list[dict[str, Any]]:
    """Per RQ queue, in two round trips: jobs waiting, the oldest one's age (0 when empty),
    scheduled, running and failed jobs. The age is read from the head job, or the next of the
    first five when the head was deleted while queued."""
    queues = [Queue(name, connection=redis) for name in QUEUES]
    pipe = redis.pipeline(transaction=False)
    for q in queues:
        pipe.llen(q.key)
        pipe.lrange(q.key, 0, 4)
        pipe.zcard(q.scheduled_job_registry.key)
        pipe.zcard(q.started_job_registry.key)
        pipe.zcard(q.failed_job_registry.key)
    raw = pipe.execute()
    heads = [raw[i * 5 + 1] for i in range(len(queues))]
    pipe = redis.pipeline(transaction=False)
    for ids in heads:
        for job_id in ids:
            pipe.hget(Job.key_for(job_id.decode()), "enqueued_at")
    stamps = iter(pipe.execute() if any(heads) else [])
    now = time.time()
    out = []
    for i, q in enumerate(queues):
        depth, ids, scheduled, started, failed = raw[i * 5:i * 5 + 5]
        found = [t for t in (_enqueued_at(next(stamps)) for _ in ids) if t is not None]
        out.append({"name": q.name, "depth": depth, "oldest_age": round(max(0.0, now - found[0]), 1) if found else 0.0,
                    "scheduled": scheduled, "started": started, "failed": failed})
    return out

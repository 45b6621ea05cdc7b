"""The job run for every recorded event.

For now it loads the record and marks it processed; the actions an event leads to (transcodes,
converters, cloud-phone settings) come in the next issue and hang off this function.
"""

from __future__ import annotations

import logging
import time

from rq import get_current_job

from app.store import EVENT_PREFIX

log = logging.getLogger(__name__)


def process_event(event_id: str) -> str:
    """Mark the event processed. Returns its final status (also kept as the job result)."""
    job = get_current_job()
    redis = job.connection
    key = EVENT_PREFIX + event_id
    source, event_type = redis.hmget(key, "source", "type")
    if source is None:
        # Retention passed before a worker got to it: nothing left to do, and nothing to fail.
        log.warning("event %s: record expired before processing", event_id)
        return "expired"
    redis.hset(key, mapping={"status": "processed", "processed_at": repr(time.time())})
    log.info("event %s processed (%s %s)", event_id, source.decode(), event_type.decode())
    return "processed"

"""The worker side of ingest: one RQ job per event that loads the record and marks it processed."""

from rq import Queue

from app.core.events import read_event
from app.core.queues import EVENTS_QUEUE
from tests.helpers import fixture_bytes, signed_path


def test_job_marks_the_event_processed(client, app, run_jobs):
    r = client.post(signed_path(), data=fixture_bytes("metastudio", "shoot_script_switch.json"))
    store = app.extensions["mediahook"].store
    assert read_event(store.redis, r.json["event_id"])["status"] == "queued"
    assert run_jobs() == 1
    record = read_event(store.redis, r.json["event_id"])
    assert record["status"] == "processed"
    assert float(record["processed_at"]) >= float(record["received_at"])


def test_an_expired_record_is_not_recreated(client, app, redis_client, run_jobs):
    """If retention passed before a worker got to the job, the job ends quietly and does not
    write a partial record back."""
    r = client.post(signed_path(), data=fixture_bytes("metastudio", "reply_command_finish.json"))
    redis_client.delete(f"mh:event:{r.json['event_id']}")
    assert run_jobs() == 1
    assert not redis_client.exists(f"mh:event:{r.json['event_id']}")
    assert Queue(EVENTS_QUEUE, connection=redis_client).failed_job_registry.count == 0

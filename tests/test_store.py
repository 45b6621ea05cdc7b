"""What a 200 means: the record and its job are in Redis, written in one round trip, with the
right lifetimes; the same delivery twice is answered as a duplicate and queued once."""

from __future__ import annotations

import json
import threading

import pytest
import requests
from rq import Queue
from rq.job import Job

from app.core.events import read_event
from app.core.queues import EVENTS_QUEUE
from tests.helpers import LIVE_EVENTS, fixture_bytes, live_event, signed_path


def _state_event(state: str = "CONNECTED", n: int = 0) -> bytes:
    return live_event("RTMP_STREAM_STATE_CHANGE", room_id=f"room-{n}", job_id="job-1",
                      output_url="rtmp://push.example.com/live", stream_key="secret-key", state=state)


def test_record_holds_raw_body_headers_source_type_and_time(client, app):
    body = fixture_bytes("metastudio", "rtmp_stream_state_change.json")
    r = client.post(signed_path(), data=body, headers={"Content-Type": "application/json", "X-Request-Id": "abc"})
    assert r.status_code == 200
    record = read_event(app.extensions["mediahook"].store.redis, r.json["event_id"])
    assert record["body"] == body
    assert record["source"] == "metastudio" and record["endpoint"] == "live-events"
    assert record["type"] == "RTMP_STREAM_STATE_CHANGE"
    assert record["status"] == "queued"
    assert record["headers"]["X-Request-Id"] == "abc"
    assert "x-hw-mss-secret" not in {k.lower() for k in record["headers"]}
    assert float(record["received_at"]) > 0
    assert record["refs"] == {"room_id": "26f065244f754b3aa853b649a21aaf66",
                              "job_id": "e87104f76d7546ce8a46ac6b04c49c3c"}
    assert record["job_id"] == f"event-{r.json['event_id']}"


def test_job_is_a_real_rq_job_on_the_events_queue(client, redis_client):
    r = client.post(signed_path(), data=_state_event())
    event_id = r.json["event_id"]
    queue = Queue(EVENTS_QUEUE, connection=redis_client)
    assert queue.job_ids == [f"event-{event_id}"]
    job = Job.fetch(f"event-{event_id}", connection=redis_client)
    assert job.func_name == "workers.process.process_event"
    assert job.args == (event_id,)
    assert job.get_status() == "queued"


def test_record_and_job_are_written_in_one_round_trip(client, app):
    """The hot path sends Redis exactly one command (the ingest script) per callback."""
    client.post(signed_path(), data=_state_event(n=-1))  # loads the script once per server
    redis = app.extensions["mediahook"].store.ingest_redis  # the client callbacks are written through
    sent: list[str] = []
    real = redis.execute_command

    def spy(*args, **kwargs):
        sent.append(str(args[0]).upper())
        return real(*args, **kwargs)

    redis.execute_command = spy
    for n in range(5):
        assert client.post(signed_path(), data=_state_event(n=n)).status_code == 200
    assert sent == ["EVALSHA"] * 5


def test_lifetimes_records_expire_jobs_never(make_app, redis_client):
    app = make_app(retention_days=2, dedup_window_seconds=120)
    r = app.test_client().post(signed_path(), data=_state_event())
    event_id = r.json["event_id"]
    assert 2 * 86400 - 5 < redis_client.ttl(f"mh:event:{event_id}") <= 2 * 86400
    dedup_keys = list(redis_client.scan_iter("mh:dedup:*"))
    assert len(dedup_keys) == 1 and 115 < redis_client.ttl(dedup_keys[0]) <= 120
    assert redis_client.ttl(f"rq:job:event-{event_id}") == -1
    assert redis_client.ttl(f"rq:queue:{EVENTS_QUEUE}") == -1


def test_same_body_twice_is_a_duplicate_with_no_second_job(client, redis_client):
    """The same signed request twice (a vendor retry): one event, one job."""
    body, path = _state_event(), signed_path()
    first = client.post(path, data=body).json
    second = client.post(path, data=body).json
    assert "duplicate" not in first
    assert second == {"code": 0, "message": "OK", "event_id": first["event_id"], "duplicate": True}
    assert Queue(EVENTS_QUEUE, connection=redis_client).count == 1


def test_dedup_is_per_source_endpoint_and_body(client, redis_client):
    assert "duplicate" not in client.post(signed_path(), data=_state_event(n=1)).json
    assert "duplicate" not in client.post(signed_path(), data=_state_event(n=2)).json
    upload = fixture_bytes("cdnetworks", "vod_upload.json")
    from tests.helpers import CDN_TOKEN

    assert "duplicate" not in client.post(f"/hooks/cdnetworks/vod-upload?token={CDN_TOKEN}", data=upload).json
    assert "duplicate" not in client.post(f"/hooks/cdnetworks/vod-transcode?token={CDN_TOKEN}",
                                          data=fixture_bytes("cdnetworks", "vod_transcode.json")).json
    assert Queue(EVENTS_QUEUE, connection=redis_client).count == 4


def test_dedup_window_passes(make_app, redis_client):
    app = make_app(dedup_window_seconds=60)
    client = app.test_client()
    body, path = _state_event(), signed_path()
    first = client.post(path, data=body).json["event_id"]
    for key in redis_client.scan_iter("mh:dedup:*"):
        redis_client.delete(key)  # what the window's expiry does
    again = client.post(path, data=body).json
    assert "duplicate" not in again and again["event_id"] != first
    assert Queue(EVENTS_QUEUE, connection=redis_client).count == 2


def test_ignored_event_type_is_recorded_without_a_job(client, app, redis_client):
    r = client.post(signed_path(), data=fixture_bytes("metastudio", "unknown_event_type.json"))
    assert r.status_code == 200 and r.json["ignored"] is True
    assert read_event(app.extensions["mediahook"].store.redis, r.json["event_id"])["status"] == "ignored"
    assert Queue(EVENTS_QUEUE, connection=redis_client).count == 0


@pytest.mark.slow
def test_concurrent_identical_deliveries_queue_one_job(gunicorn_server, redis_client):
    """Identical callbacks racing over real HTTP into several gunicorn workers: one job."""
    base = gunicorn_server()
    body = _state_event()
    path = signed_path(host=base[len("http://"):])  # one request, delivered 16 times
    barrier = threading.Barrier(16)
    answers: list[dict] = []

    def post() -> None:
        barrier.wait()
        answers.append(requests.post(base + path, data=body, timeout=10).json())

    threads = [threading.Thread(target=post) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 16
    assert len({a["event_id"] for a in answers}) == 1
    assert sum(1 for a in answers if not a.get("duplicate")) == 1
    assert Queue(EVENTS_QUEUE, connection=redis_client).count == 1


def test_event_ids_sort_by_arrival(client):
    """Ids lead with the arrival millisecond (random bits after it order events within one)."""
    ids = [client.post(signed_path(), data=_state_event(n=n)).json["event_id"] for n in range(5)]
    assert [i[:11] for i in ids] == sorted(i[:11] for i in ids)


def test_stored_record_keeps_no_query_string_secrets(make_app, redis_client):
    """The token/hwSecret live in the URL; the record keeps the body and chosen headers only."""
    from tests.helpers import MS_TOKEN

    app = make_app(sources={"metastudio": {"auth_type": "NONE", "token": MS_TOKEN}})
    r = app.test_client().post(f"{LIVE_EVENTS}?token={MS_TOKEN}", data=_state_event())
    dump = json.dumps({k.decode(): v.decode("latin-1") for k, v in
                       redis_client.hgetall(f"mh:event:{r.json['event_id']}").items()})
    assert MS_TOKEN not in dump


def test_job_hash_template_matches_what_rq_writes(app):
    """The template-built job hash must equal RQ's own Job.create(...).to_dict(), bar timestamps."""
    store = app.extensions["mediahook"].store
    ours = store._job_items("0123abcd")
    ours = dict(zip(ours[::2], ours[1::2], strict=True))
    rq_job = store._new_job("0123abcd").to_dict()
    theirs = {k: v if isinstance(v, (bytes, str)) else str(v) for k, v in rq_job.items() if v is not None}
    for stamp in ("created_at", "enqueued_at"):
        assert ours.pop(stamp)[:16] == theirs.pop(stamp)[:16]
    assert ours == theirs


def test_ingest_loads_the_script_again_after_redis_forgot_it(client, redis_client, tmp_path):
    """A Redis restart (or SCRIPT FLUSH) empties the script cache: the next callback is still
    recorded and queued in Redis, not refused and not spooled."""
    assert client.post(signed_path(), data=_state_event(n=1)).status_code == 200
    redis_client.script_flush()
    r = client.post(signed_path(), data=_state_event(n=2))
    assert r.status_code == 200
    assert read_event(redis_client, r.json["event_id"])["status"] == "queued"
    assert Queue(EVENTS_QUEUE, connection=redis_client).count == 2


def test_read_event_decodes_text_parses_json_and_keeps_the_body_bytes(client, redis_client):
    body = _state_event()
    r = client.post(signed_path(), data=body)
    record = read_event(redis_client, r.json["event_id"])
    assert record["body"] == body and isinstance(record["id"], str)
    assert isinstance(record["headers"], dict) and record["refs"]["room_id"] == "room-0"
    redis_client.hset(f"mh:event:{r.json['event_id']}", mapping={"notes": json.dumps(["a note"])})
    assert read_event(redis_client, r.json["event_id"])["notes"] == ["a note"]
    assert read_event(redis_client, "0" * 23) is None

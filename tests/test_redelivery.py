"""Re-deliveries versus transitions: MetaStudio's stream-state and script-switch bodies carry no
id and no time, so the same bytes come back whenever a stream returns to a state. A state that
follows a different one is always recorded (and queued); the vendor retrying the same signed
request is not. And while Redis is down, the first delivery's time survives its re-delivery."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import time

import pytest
from rq import Queue, SimpleWorker
from rq.job import Job

from app.cli.embedded_redis import RedisServer
from app.core.events import read_event
from app.core.queues import EVENTS_QUEUE
from app.sources.metastudio import signature_headers
from app.web import spool
from tests.helpers import LIVE_EVENTS, MS_KEY, MS_TOKEN, free_port, live_event, signed_path, wait_until
from workers import ops

URL = "http://localhost" + LIVE_EVENTS  # what the test client's requests look like


def state(value: str, room: str = "room-1", output: str = "rtmp://live.example.com/app") -> bytes:
    return live_event("RTMP_STREAM_STATE_CHANGE", room_id=room, job_id="job-1", output_url=output,
                      stream_key="sk", state=value)


def switch(no: str) -> bytes:
    return live_event("SHOOT_SCRIPT_SWITCH", room_id="room-1", job_id="job-1", scene_script_name="s",
                      shoot_script_sequence_no=no, shoot_script_title=f"p{no}")


def reply() -> bytes:
    return live_event("REPLY_COMMAND_FINISH", room_id="room-1", job_id="job-1", reply_id="reply-7")


def jobs(redis_client) -> int:
    return Queue(EVENTS_QUEUE, connection=redis_client).count


def record(app, event_id: str) -> dict:
    return read_event(app.extensions["mediahook"].store.redis, event_id)


@pytest.fixture
def mss_a(make_app):
    return make_app(dedup_window_seconds=600)


@pytest.fixture
def head_app(make_app):
    return make_app(sources={"metastudio": {"auth_type": "MSS_A_HEAD"}})


@pytest.fixture
def none_app(make_app):
    return make_app(sources={"metastudio": {"auth_type": "NONE", "token": MS_TOKEN}})


# --- MSS_A / MSS_A_HEAD: the signed time tells a retry from a transition ---------------------

def test_connected_disconnected_connected_signed_apart_is_three_events(mss_a, redis_client):
    client, now = mss_a.test_client(), time.time()
    answers = [client.post(signed_path(now=now + i), data=state(s)).json
               for i, s in enumerate(("CONNECTED", "DISCONNECTED", "CONNECTED"))]
    assert [a.get("duplicate") for a in answers] == [None, None, None]
    assert len({a["event_id"] for a in answers}) == 3
    assert jobs(redis_client) == 3
    assert [json.loads(json.loads(record(mss_a, a["event_id"])["body"])["message"])["state"]
            for a in answers] == ["CONNECTED", "DISCONNECTED", "CONNECTED"]


def test_connected_disconnected_connected_signed_in_one_second_is_three_events(mss_a, redis_client):
    """hwTime has whole seconds: a flap inside one second gives the two CONNECTED the same
    signature. The second is still new, because a different state was recorded in between."""
    client, path = mss_a.test_client(), signed_path()
    answers = [client.post(path, data=state(s)).json for s in ("CONNECTED", "DISCONNECTED", "CONNECTED")]
    assert [a.get("duplicate") for a in answers] == [None, None, None]
    assert jobs(redis_client) == 3


def test_the_same_signed_request_twice_is_one_event(mss_a, redis_client):
    client, path = mss_a.test_client(), signed_path()
    first = client.post(path, data=state("CONNECTED")).json
    again = client.post(path, data=state("CONNECTED")).json
    assert again == {"code": 0, "message": "OK", "event_id": first["event_id"], "duplicate": True}
    assert jobs(redis_client) == 1


def test_a_retry_is_caught_across_other_streams_events(mss_a, redis_client):
    """The "still the last event" rule is per stream (room, job, output): another stream's
    events in between do not turn a retry into a new event."""
    client, now = mss_a.test_client(), time.time()
    path = signed_path(now=now)
    first = client.post(path, data=state("CONNECTED")).json
    client.post(signed_path(now=now + 1), data=state("DISCONNECTED", room="room-2"))
    client.post(signed_path(now=now + 1), data=state("DISCONNECTED", output="rtmp://backup.example.com/app"))
    assert client.post(path, data=state("CONNECTED")).json == {
        "code": 0, "message": "OK", "event_id": first["event_id"], "duplicate": True}
    assert jobs(redis_client) == 3


def test_script_switch_1_2_1_is_three_events(mss_a, redis_client):
    client, now = mss_a.test_client(), time.time()
    answers = [client.post(signed_path(now=now + i), data=switch(no)).json for i, no in enumerate("121")]
    answers += [client.post(signed_path(now=now + 3), data=switch(no)).json for no in "121"]  # one second
    assert [a.get("duplicate") for a in answers] == [None] * 6
    assert jobs(redis_client) == 6
    assert mss_a.test_client().post(signed_path(now=now + 3), data=switch("1")).json["duplicate"] is True


def test_a_reply_finish_resigned_on_retry_is_still_one_event(mss_a, redis_client):
    """A body that names itself (reply_id) is deduplicated on its bytes, whatever its time."""
    client, now = mss_a.test_client(), time.time()
    first = client.post(signed_path(now=now), data=reply()).json
    again = client.post(signed_path(now=now + 5), data=reply()).json
    assert again.get("duplicate") is True and again["event_id"] == first["event_id"]
    assert jobs(redis_client) == 1


def test_sent_at_is_the_signed_time_for_mss_a(mss_a):
    now = int(time.time()) - 7
    r = mss_a.test_client().post(signed_path(now=now), data=state("CONNECTED"))
    stored = record(mss_a, r.json["event_id"])
    assert stored["sent_at"] == repr(float(now))
    assert float(stored["received_at"]) >= now + 7


def test_mss_a_head_sent_at_and_transitions(head_app, redis_client):
    client, now = head_app.test_client(), int(time.time())
    answers = [client.post(LIVE_EVENTS, data=state(s), headers=signature_headers(URL, MS_KEY, now + i)).json
               for i, s in enumerate(("CONNECTED", "DISCONNECTED", "CONNECTED"))]
    assert [a.get("duplicate") for a in answers] == [None, None, None]
    assert [record(head_app, a["event_id"])["sent_at"] for a in answers] == [repr(float(now + i)) for i in range(3)]
    retry = client.post(LIVE_EVENTS, data=state("CONNECTED"), headers=signature_headers(URL, MS_KEY, now + 2)).json
    assert retry.get("duplicate") is True and retry["event_id"] == answers[2]["event_id"]
    assert jobs(redis_client) == 3


# --- NONE: no signed time, so no delivery dedup of id-less states ------------------------------

def test_none_auth_records_the_same_state_twice_and_keeps_no_sent_at(none_app, redis_client):
    """Nothing tells a retry from a return to the same state here; both are recorded and queued,
    and the worker side makes a repeated state a no-op (the stream is already in it)."""
    client = none_app.test_client()
    answers = [client.post(f"{LIVE_EVENTS}?token={MS_TOKEN}", data=state("CONNECTED")).json for _ in range(2)]
    assert [a.get("duplicate") for a in answers] == [None, None]
    assert answers[0]["event_id"] != answers[1]["event_id"]
    assert jobs(redis_client) == 2
    assert all("sent_at" not in record(none_app, a["event_id"]) for a in answers)
    switches = [client.post(f"{LIVE_EVENTS}?token={MS_TOKEN}", data=switch("2")).json for _ in range(2)]
    assert [a.get("duplicate") for a in switches] == [None, None]


def test_none_auth_still_deduplicates_a_body_that_names_itself(none_app, redis_client):
    client = none_app.test_client()
    first = client.post(f"{LIVE_EVENTS}?token={MS_TOKEN}", data=reply()).json
    again = client.post(f"{LIVE_EVENTS}?token={MS_TOKEN}", data=reply()).json
    assert again.get("duplicate") is True and again["event_id"] == first["event_id"]
    assert jobs(redis_client) == 1


def test_cdnetworks_has_no_sent_at_and_keeps_body_dedup(client, app, redis_client):
    from tests.helpers import CDN_TOKEN, fixture_bytes

    body = fixture_bytes("cdnetworks", "vod_upload.json")
    first = client.post(f"/hooks/cdnetworks/vod-upload?token={CDN_TOKEN}", data=body).json
    again = client.post(f"/hooks/cdnetworks/vod-upload?token={CDN_TOKEN}", data=body).json
    assert again.get("duplicate") is True and again["event_id"] == first["event_id"]
    assert "sent_at" not in record(app, first["event_id"])
    assert jobs(redis_client) == 1


# --- Redis down: the first delivery's time survives its re-delivery ---------------------------

@pytest.fixture
def down_redis(tmp_path):
    """A real redis-server that is not running yet (its port is free); start() brings it up."""
    server = RedisServer(str(tmp_path / "late-redis"), port=free_port())
    yield server
    server.stop()


def _outage_app(make_app, down_redis):
    return make_app(redis={"url": down_redis.url, "connect_timeout": 0.2, "socket_timeout": 0.5})


def _spooled(app) -> list[spool.Event]:
    return [spool.read(p) for p in spool.pending(app.extensions["mediahook"].settings.spool_dir)]


def test_a_redelivery_never_overtakes_its_spooled_original(make_app, down_redis):
    """Two deliveries of one request spooled; the original's file is held by another process
    (a drainer waiting on a slow Redis): this pass must wait for it, not record the retry."""
    app = _outage_app(make_app, down_redis)
    client, path = app.test_client(), signed_path()
    answers = [client.post(path, data=state("CONNECTED")).json for _ in range(2)]
    first, second = _spooled(app)
    assert [first.id, second.id] == [a["event_id"] for a in answers] and first.received_at < second.received_at
    runtime = app.extensions["mediahook"]
    spool_dir = runtime.settings.spool_dir
    down_redis.start()

    held = os.open(spool.pending(spool_dir)[0], os.O_RDONLY)  # another open file: a real flock conflict
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert spool.drain_once(spool_dir, runtime.store) == 0
        assert spool.depth(spool_dir) == 2
    finally:
        os.close(held)
    assert spool.drain_once(spool_dir, runtime.store) == 2

    redis = down_redis.client()
    assert Queue(EVENTS_QUEUE, connection=redis).job_ids == [f"event-{first.id}"]
    alias = read_event(runtime.store.redis, second.id)  # the id the retry was answered with still says where it went
    assert (alias["status"], alias["duplicate_of"], alias.get("job_id")) == ("duplicate", first.id, None)
    stored = read_event(runtime.store.redis, first.id)
    assert float(stored["received_at"]) == first.received_at
    assert stored["sent_at"] == repr(first.sent_at) and first.sent_at is not None

    # Replaying the alias (a person with the id the retry was answered with) acts on nothing.
    ops.replay(redis, second.id)
    SimpleWorker([Queue(EVENTS_QUEUE, connection=redis)], connection=redis).work(burst=True, with_scheduler=False)
    replayed = Job.fetch(f"event-{second.id}-replay-1", connection=redis)
    assert replayed.return_value() == "duplicate"
    assert read_event(runtime.store.redis, second.id)["status"] == "duplicate"


def test_a_redelivery_recorded_before_the_spool_drains_takes_the_first_time(make_app, down_redis, tmp_path):
    """The vendor retries after Redis is back, before the spooled original has drained (or on
    another host): the record keeps the original's received time (and the one job)."""
    app = _outage_app(make_app, down_redis)
    client, path = app.test_client(), signed_path()
    assert client.post(path, data=state("CONNECTED")).status_code == 200
    (original,) = _spooled(app)
    down_redis.start()
    retry = client.post(path, data=state("CONNECTED")).json
    assert "duplicate" not in retry and retry["event_id"] != original.id
    runtime = app.extensions["mediahook"]
    spool_dir = runtime.settings.spool_dir
    assert float(read_event(runtime.store.redis, retry["event_id"])["received_at"]) > original.received_at

    (spooled,) = spool.pending(spool_dir)
    kept = str(tmp_path / "kept")
    shutil.copy(spooled, kept)
    assert spool.drain_once(spool_dir, runtime.store) == 1
    stored = read_event(runtime.store.redis, retry["event_id"])
    assert float(stored["received_at"]) == original.received_at
    redis = down_redis.client()
    assert redis.zscore("mh:events", retry["event_id"]) == original.received_at
    assert Queue(EVENTS_QUEUE, connection=redis).count == 1

    shutil.copy(kept, spooled)  # the same file drained again (a crash before its unlink): still once
    assert spool.drain_once(spool_dir, runtime.store) == 1
    assert Queue(EVENTS_QUEUE, connection=redis).count == 1
    assert read_event(runtime.store.redis, original.id)["duplicate_of"] == retry["event_id"]
    assert float(read_event(runtime.store.redis, retry["event_id"])["received_at"]) == original.received_at
    assert redis.zcard("mh:events") == 1


def test_the_drainer_records_the_first_of_two_spooled_deliveries(make_app, down_redis):
    """The whole path with the drainer thread: Redis down, the same request delivered twice,
    Redis back; one event, with the first delivery's id, times and job."""
    app = make_app(start_drainer=True, redis={"url": down_redis.url, "connect_timeout": 0.2, "socket_timeout": 0.5})
    client, path = app.test_client(), signed_path()
    answers = [client.post(path, data=state("CONNECTED")).json for _ in range(2)]
    first = _spooled(app)[0]
    assert first.id == answers[0]["event_id"]
    down_redis.start()
    spool_dir = app.extensions["mediahook"].settings.spool_dir
    wait_until(lambda: spool.depth(spool_dir) == 0, what="the spool to drain")
    redis = down_redis.client()
    assert Queue(EVENTS_QUEUE, connection=redis).job_ids == [f"event-{first.id}"]
    stored = read_event(app.extensions["mediahook"].store.redis, first.id)
    assert float(stored["received_at"]) == first.received_at and float(stored["sent_at"]) == first.sent_at
    assert redis.zcard("mh:events") == 1


def test_an_old_spool_file_without_the_new_fields_still_drains(app, redis_client):
    """Files spooled by the previous version have no sent_at / dedup_scope."""
    runtime = app.extensions["mediahook"]
    spool_dir = runtime.settings.spool_dir
    body = state("CONNECTED")
    doc = {"id": "0123456789a000000000001", "source": "metastudio", "endpoint": "live-events",
           "type": "RTMP_STREAM_STATE_CHANGE", "status": "queued", "received_at": time.time(),
           "body": base64.b64encode(body).decode(), "headers": {}, "refs": {"room_id": "room-1"},
           "remote_addr": "", "dedup": "ab" * 32}
    with open(os.path.join(spool_dir, doc["id"] + spool.SUFFIX), "w") as fh:
        json.dump(doc, fh)
    assert spool.drain_once(spool_dir, runtime.store) == 1
    stored = read_event(runtime.store.redis, doc["id"])
    assert stored["status"] == "queued" and "sent_at" not in stored
    assert jobs(redis_client) == 1


def test_an_undeduplicated_event_drained_twice_is_recorded_once(none_app, redis_client):
    """NONE-auth states skip delivery dedup; the event id still makes a second drain a no-op."""
    runtime = none_app.extensions["mediahook"]
    r = none_app.test_client().post(f"{LIVE_EVENTS}?token={MS_TOKEN}", data=state("CONNECTED"))
    stored = read_event(runtime.store.redis, r.json["event_id"])
    assert stored["dedup"] == ""
    again = spool.Event(id=stored["id"], source=stored["source"], endpoint=stored["endpoint"], type=stored["type"],
                        status="queued", received_at=float(stored["received_at"]), body=stored["body"],
                        headers=stored["headers"], refs=stored["refs"], remote_addr="", dedup="")
    spool.write(runtime.settings.spool_dir, again)
    assert spool.drain_once(runtime.settings.spool_dir, runtime.store) == 1
    assert jobs(redis_client) == 1


def test_a_stream_named_with_a_lone_surrogate_is_still_accepted(mss_a, redis_client):
    """JSON may carry lone surrogates ("\\ud800"); naming the stream must not turn them into a 500."""
    client, path = mss_a.test_client(), signed_path()
    answers = [client.post(path, data=state(s, room="room-\ud800")) for s in ("CONNECTED", "END", "CONNECTED")]
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert jobs(redis_client) == 3


@pytest.mark.slow
def test_transitions_and_a_retry_over_real_gunicorn(gunicorn_server, redis_client):
    """The same rule through real HTTP and two gunicorn workers: C, D, C signed apart are three
    events; the vendor retrying the last request is answered as its duplicate."""
    import requests

    base = gunicorn_server()
    host, now = base[len("http://"):], time.time()
    paths = [signed_path(host=host, now=now + i) for i in range(3)]
    answers = [requests.post(base + p, data=state(s), timeout=10).json()
               for p, s in zip(paths, ("CONNECTED", "DISCONNECTED", "CONNECTED"), strict=True)]
    assert [a.get("duplicate") for a in answers] == [None, None, None]
    retry = requests.post(base + paths[2], data=state("CONNECTED"), timeout=10).json()
    assert retry.get("duplicate") is True and retry["event_id"] == answers[2]["event_id"]
    assert jobs(redis_client) == 3
    assert [redis_client.hget(f"mh:event:{a['event_id']}", "sent_at") for a in answers] == [
        repr(float(int(now) + i)).encode() for i in range(3)]

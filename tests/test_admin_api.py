"""The admin API under /api/: auth (fail closed), event listing with filters and a stable
cursor, details with secrets masked, replay, failures and requeue, live jobs, transcodes, KooPhone
apply and live start — against a real Redis, with actions run against the vendor simulators."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import time

import pytest
import requests
from rq import Queue, SimpleWorker
from rq.job import Job

from app.admin.api import token_ok
from app.core import logs
from app.core.events import EVENT_PREFIX, Event, dedup_digest, job_id_for, new_event_id
from app.core.queues import EVENTS_QUEUE
from tests.conftest import ROOM, vendor_sections
from tests.helpers import CDN_TOKEN, MS_KEY, VOD_TRANSCODE, fixture_bytes, free_port, live_event
from tests.vendor_harness import koophone_instance, post_live, set_faults, sim_tasks, stream_event
from workers import actions, ops

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UPLOAD = f"/hooks/cdnetworks/vod-upload?token={CDN_TOKEN}"
JOB = "e87104f76d7546ce8a46ac6b04c49c3c"  # the job of the MetaStudio fixtures
FIXTURE_STREAM_KEY = json.loads(json.loads(fixture_bytes("metastudio", "rtmp_stream_state_change.json"))["message"])[
    "stream_key"]
EVENTS_LIST = f"rq:queue:{EVENTS_QUEUE}"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def api_app(make_app):
    return make_app(admin={"token": TOKEN})


@pytest.fixture
def api(api_app):
    return api_app.test_client()


@pytest.fixture
def vendor_api(make_app, sim):
    """The admin API on an app whose actions go to the simulators. Its public_base_url (for live
    start) is the test client's host: nothing listens there, so the simulator's callbacks fail."""
    app = make_app(admin={"token": TOKEN}, public_base_url="http://localhost", **vendor_sections(sim.url))
    return app.test_client()


def get(client, path: str, **params):
    return client.get(path, query_string=params, headers=AUTH)


def post(client, path: str, body=None, **kwargs):
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    return client.post(path, data=data, headers=AUTH, **kwargs)


def status_of(redis, action_id: str) -> str | None:
    return (actions.record(redis, action_id) or {}).get("status")


def events_done(redis) -> bool:
    return redis.llen(EVENTS_LIST) == 0


def reply_event(n: int, job_id: str = JOB) -> bytes:
    return live_event("REPLY_COMMAND_FINISH", room_id=ROOM, job_id=job_id, reply_id=f"reply-{n}")


# --- authentication -------------------------------------------------------------------------

def test_without_a_configured_token_every_api_call_is_401(make_app):
    client = make_app().test_client()
    for method, path in (("GET", "/api/events"), ("GET", "/api/failed"), ("POST", "/api/failed/requeue"),
                         ("GET", "/api/no-such-thing"), ("DELETE", "/api/events"), ("GET", "/api")):
        r = client.open(path, method=method, headers={"Authorization": "Bearer anything-at-all-really"})
        assert r.status_code == 401, (method, path)
        assert r.json == {"code": 401, "message": "unauthorized"}
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    # The rest of the service is unaffected.
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_the_bearer_token_is_required_and_checked(api):
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": TOKEN}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer {TOKEN}x"}):
        r = api.get("/api/events", headers=headers)
        assert (r.status_code, r.json["message"]) == (401, "unauthorized"), headers
    assert api.get("/api/events", headers=AUTH).status_code == 200
    assert api.get("/api/events", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    # Unknown paths and wrong methods say nothing without the token, and are JSON with it.
    assert api.get("/api/nope").status_code == 401
    r = api.get("/api/nope", headers=AUTH)
    assert r.status_code == 404 and r.json["code"] == 404
    r = api.delete("/api/events", headers=AUTH)
    assert r.status_code == 405 and r.json["code"] == 405 and "GET" in r.headers["Allow"]


def test_token_comparison_fails_closed():
    assert token_ok(f"Bearer {TOKEN}", TOKEN)
    assert not token_ok(f"Bearer {TOKEN}", None)
    assert not token_ok(None, TOKEN)
    assert not token_ok("Bearer \udcff", TOKEN)  # undecodable bytes in a header never raise


def test_the_token_comes_from_the_environment_over_real_http(gunicorn_server):
    base = gunicorn_server(env={"MEDIAHOOK_ADMIN_TOKEN": TOKEN})
    assert requests.get(base + "/api/events", timeout=5).status_code == 401
    r = requests.get(base + "/api/events", headers=AUTH, timeout=5)
    assert r.status_code == 200 and r.json() == {"events": [], "next_cursor": None}
    assert requests.get(base + "/openapi.json", timeout=5).json()["openapi"].startswith("3.")


# --- listing events -------------------------------------------------------------------------

def test_events_are_listed_newest_first_and_filtered(api, redis_client):
    live = post_live(api, fixture_bytes("metastudio", "rtmp_stream_state_change.json"))
    other_room = post_live(api, stream_event("other-room", "CONNECTED", job_id="other-job"))
    ignored = post_live(api, live_event("SOMETHING_NEW", room_id=ROOM, job_id=JOB))
    upload = api.post(UPLOAD, data=fixture_bytes("cdnetworks", "vod_upload.json")).json["event_id"]
    transcoded = api.post(f"{VOD_TRANSCODE}?token={CDN_TOKEN}",
                          data=fixture_bytes("cdnetworks", "vod_transcode.json")).json["event_id"]

    def ids(**params) -> list[str]:
        r = get(api, "/api/events", **params)
        assert r.status_code == 200, r.json
        return [e["id"] for e in r.json["events"]]

    assert ids() == [transcoded, upload, ignored, other_room, live]
    assert ids(source="cdnetworks") == [transcoded, upload]
    assert ids(type="VOD_UPLOAD") == [upload]
    assert ids(status="ignored") == [ignored]
    assert ids(status="queued", source="metastudio") == [other_room, live]
    assert ids(room_id=ROOM) == [live]  # an ignored event is not parsed: it has no refs
    assert ids(job_id="other-job") == [other_room]
    assert ids(video_id="E869FC95F3C7493ED56E8751C4AA7BEE") == [upload]
    assert ids(type="NOPE") == []

    first = get(api, "/api/events").json["events"]
    summary = next(e for e in first if e["id"] == upload)
    assert summary["source"] == "cdnetworks" and summary["endpoint"] == "vod-upload"
    assert summary["refs"]["video_ids"] == ["9B0F7BA8BCB9D056D4C24ADDBF821D10", "E869FC95F3C7493ED56E8751C4AA7BEE"]
    assert summary["processed_at"] is None and summary["replays"] == 0

    # Time range: since is inclusive, until exclusive; ISO 8601, UTC when no offset is given.
    at = {e["id"]: e["received_at"] for e in first}

    def iso(ts: float, tz: dt.timezone = dt.UTC) -> str:
        """To the microsecond at or before ``ts`` (fromtimestamp would round, maybe up)."""
        return (EPOCH + dt.timedelta(microseconds=math.floor(ts * 1e6))).astimezone(tz).isoformat()

    assert ids(since=iso(at[ignored])) == [transcoded, upload, ignored]
    assert ids(until=iso(at[ignored])) == [other_room, live]
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert ids(since=iso(at[other_room], plus_two), until=iso(at[upload], plus_two)) == [ignored, other_room]
    naive = iso(at[upload]).removesuffix("+00:00")
    assert ids(since=naive) == [transcoded, upload]


def test_pages_follow_a_stable_cursor(api, redis_client):
    posted = [post_live(api, reply_event(n)) for n in range(25)]
    newest_first = posted[::-1]

    r = get(api, "/api/events", limit=10)
    page1, cursor = [e["id"] for e in r.json["events"]], r.json["next_cursor"]
    assert page1 == newest_first[:10] and cursor

    # New events arrive between pages: they do not shift what comes next.
    later = [post_live(api, reply_event(100 + n)) for n in range(5)]
    r = get(api, "/api/events", limit=10, cursor=cursor)
    page2, cursor = [e["id"] for e in r.json["events"]], r.json["next_cursor"]
    assert page2 == newest_first[10:20]
    r = get(api, "/api/events", limit=10, cursor=cursor)
    assert [e["id"] for e in r.json["events"]] == newest_first[20:]
    assert r.json["next_cursor"] is None

    # The same cursor gives the same page again; a fresh walk starts with the new events.
    again = get(api, "/api/events", limit=10, cursor=get(api, "/api/events", limit=10).json["next_cursor"])
    assert [e["id"] for e in again.json["events"]] == (later[::-1] + newest_first)[10:20]

    # An exact last page says so: no cursor to an empty page.
    r = get(api, "/api/events", limit=30)
    assert len(r.json["events"]) == 30 and r.json["next_cursor"] is None


def test_pages_with_filters_and_events_received_at_the_same_instant(api_app, redis_client):
    store = api_app.extensions["mediahook"].store
    now = time.time()
    same = []
    for n in range(7):  # seven events with one received_at: the cursor must order them by id
        body = reply_event(n, job_id="tied")
        event = Event(id=new_event_id(now), source="metastudio", endpoint="live-events",
                      type="REPLY_COMMAND_FINISH", status="queued", received_at=now, body=body, headers={},
                      refs={"room_id": ROOM, "job_id": "tied"}, remote_addr="", dedup=dedup_digest("m", "e", body))
        store.ingest(event)
        same.append(event.id)
    others = [post_live(api_app.test_client(), reply_event(n, job_id="other")) for n in range(5)]

    client = api_app.test_client()
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, "job_id": "tied", **({"cursor": cursor} if cursor else {})}
        r = get(client, "/api/events", **params)
        seen += [e["id"] for e in r.json["events"]]
        pages += 1
        cursor = r.json["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(same, reverse=True) and pages == 4
    assert not set(seen) & set(others)


def test_a_scan_budget_gives_short_pages_that_continue(redis_client, api):
    old = [post_live(api, reply_event(n, job_id="old-job")) for n in range(3)]
    for n in range(20):
        post_live(api, reply_event(n, job_id="new-job"))
    rows, position = ops.list_events(redis_client, job_id="old-job", limit=10, scan_limit=8)
    assert rows == [] and position is not None  # 8 entries read, none matched: continue from there
    found = []
    while position is not None:
        rows, position = ops.list_events(redis_client, job_id="old-job", limit=10, scan_limit=8, before=position)
        found += [r["id"] for r in rows]
    assert found == old[::-1]


@pytest.mark.parametrize("params, field", [
    ({"cursor": "not a cursor"}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'[1.5, "../x"]').decode()}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b'{"a": 1}').decode()}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b"[NaN, \"abc\"]").decode()}, "cursor"),
    ({"limit": "0"}, "limit"),
    ({"limit": "x"}, "limit"),
    ({"limit": "201"}, "limit"),
    ({"status": "done"}, "status"),
    ({"source": "youtube"}, "source"),
    ({"since": "yesterday"}, "since"),
    ({"since": "2024-02-02T00:00:00Z", "until": "2024-02-01T00:00:00Z"}, "until"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_queries_are_400_with_the_field(api, params, field):
    r = get(api, "/api/events", **params)
    assert r.status_code == 400, r.json
    assert r.json["message"] == "invalid query" and field in r.json["errors"], r.json


# --- one event: details, masking, replay ------------------------------------------------------

def test_event_details_mask_the_stream_key_and_never_show_tokens(api, redis_client):
    event_id = post_live(api, fixture_bytes("metastudio", "rtmp_stream_state_change.json"))
    r = get(api, f"/api/events/{event_id}")
    assert r.status_code == 200
    doc = r.json
    assert doc["id"] == event_id and doc["status"] == "queued" and doc["job_status"] == "queued"
    assert json.loads(doc["body"]["message"])["stream_key"] == "***"
    assert doc["refs"] == {"room_id": ROOM, "job_id": JOB}
    assert doc["action_states"] == [] and isinstance(doc["received_at"], float)
    text = r.get_data(as_text=True)
    for secret in (FIXTURE_STREAM_KEY, MS_KEY, CDN_TOKEN, TOKEN):
        assert secret not in text

    upload = api.post(UPLOAD, data=fixture_bytes("cdnetworks", "vod_upload.json")).json["event_id"]
    text = get(api, f"/api/events/{upload}").get_data(as_text=True)
    assert CDN_TOKEN not in text


def test_the_event_view_masks_every_name_the_logs_mask(api):
    """One secret rule: a vendor field such as api_key or access_token in a body is masked in
    the event view as it is in the log lines."""
    secrets = {"api_key": "k-1", "access_token": "t-2", "client_secret": "s-3", "cookie": "c-4",
               "credentials": "p-5", "stream_key": "sk-6"}
    body = live_event("RTMP_STREAM_STATE_CHANGE", room_id=ROOM, job_id=JOB, output_url="rtmp://x/y",
                      state="CONNECTED", **secrets)
    event_id = post_live(api, body)
    message = json.loads(get(api, f"/api/events/{event_id}").json["body"]["message"])
    assert {name: message[name] for name in secrets} == dict.fromkeys(secrets, "***")
    assert all(logs.Redactor(()).value({name: "v"}) == {name: "***"} for name in secrets)


def test_unknown_ids_are_404_json(vendor_api):
    for method, path, body in (("GET", "/api/events/0123456789abcdef0123456", None),
                               ("POST", "/api/events/0123456789abcdef0123456/replay", None),
                               ("GET", "/api/live/jobs/no-such-job", None),
                               ("GET", "/api/transcodes?video_id=no-such-video", None),
                               ("POST", "/api/failed/requeue", {"id": "no-such-action"})):
        r = vendor_api.open(path, method=method, headers=AUTH, data=json.dumps(body) if body else None)
        assert r.status_code == 404, (path, r.json)
        assert r.json["code"] == 404 and r.json["message"], path


def test_an_upload_with_its_actions_transcodes_and_a_replay(vendor_api, sim, drive, redis_client):
    event_id = vendor_api.post(UPLOAD, data=fixture_bytes("cdnetworks", "vod_upload.json")).json["event_id"]
    videos = ("9B0F7BA8BCB9D056D4C24ADDBF821D10", "E869FC95F3C7493ED56E8751C4AA7BEE")

    def all_done() -> bool:
        r = [get(vendor_api, "/api/transcodes", video_id=v) for v in videos]
        return all(x.status_code == 200 and {g["status"] for g in x.json["rungs"]} == {"success"} for x in r)

    drive(all_done, what="every rung to succeed")

    r = get(vendor_api, "/api/transcodes", video_id=videos[0])
    assert r.json["video_id"] == videos[0]
    rungs = r.json["rungs"]
    assert [g["rung"] for g in rungs] == ["360", "480", "720"]  # lowest first; 1080 is above the source
    task_ids = {t["id"] for t in sim_tasks(sim.url)}
    for rung in rungs:
        assert rung["task_id"] in task_ids and rung["progress"] == 1.0
        assert rung["target_url"].startswith("https://cdn.sim/") and rung["origin_url"].endswith(".mp4")

    doc = get(vendor_api, f"/api/events/{event_id}").json
    assert doc["status"] == "processed" and doc["job_status"] == "finished"
    assert len(doc["actions"]) == 6
    submits = [a for a in doc["action_states"] if a["kind"] == "transcode.submit"]
    assert len(submits) == 6 and all(a["status"] == "succeeded" and a["attempts"] == 1 for a in submits)
    assert all(a["result"]["task_id"] in task_ids for a in submits)  # the vendor's reply, in short
    assert [g["rung"] for g in doc["transcodes"][videos[1]]] and set(doc["transcodes"]) == set(videos)

    r = post(vendor_api, f"/api/events/{event_id}/replay")
    assert r.status_code == 202
    assert r.json == {"event_id": event_id, "job_id": f"{job_id_for(event_id)}-replay-1"}
    drive(lambda: Job.fetch(r.json["job_id"], connection=redis_client).get_status() == "finished",
          what="the replay")
    assert get(vendor_api, f"/api/events/{event_id}").json["replays"] == 1
    assert len(sim_tasks(sim.url)) == 6  # idempotent: no second task


# --- failures and requeue ---------------------------------------------------------------------

def test_failed_actions_are_listed_with_their_event_and_requeued_by_filter(vendor_api, sim, drive, redis_client):
    set_faults(sim.url, {"koophone": {"vendor_errors": [
        {"times": 1, "code": "KOOPHONE.API.1002", "message": "instances are not in the same region"}]}})
    event_id = post_live(vendor_api, stream_event(ROOM, "CONNECTED"))
    action_id = f"koophone-{event_id}-0-0"
    drive(lambda: status_of(redis_client, action_id) == "failed"
          and status_of(redis_client, f"converter-room-{ROOM}-{event_id}") == "succeeded",
          what="the apply to fail and the converter to switch")

    r = get(vendor_api, "/api/failed")
    assert r.status_code == 200 and r.json["total"] == 1
    [item] = r.json["items"]
    assert item["id"] == action_id and item["kind"] == "video_settings.reconcile" and item["status"] == "failed"
    assert item["attempts"] == 1 and item["requeueable"] is True
    assert item["last_error"]["vendor"] == "koophone" and item["last_error"]["code"] == "KOOPHONE.API.1002"
    assert item["last_error"]["message"] == "instances are not in the same region"
    assert item["event"]["id"] == event_id and item["event"]["type"] == "RTMP_STREAM_STATE_CHANGE"
    assert item["params"]["profile"] == "normal"
    assert [i["id"] for i in get(vendor_api, "/api/failed", kind="video_settings").json["items"]] == [action_id]
    assert get(vendor_api, "/api/failed", kind="converter").json["items"] == []
    assert get(vendor_api, "/api/failed", vendor="flighthub").json["items"] == []
    assert get(vendor_api, "/api/failed", event_id=event_id).json["total"] == 1

    # The event's own view shows the same failure.
    shown = {a["id"]: a for a in get(vendor_api, f"/api/events/{event_id}").json["action_states"]}
    assert shown[action_id]["last_error"]["code"] == "KOOPHONE.API.1002"

    r = post(vendor_api, "/api/failed/requeue", {"filter": {"kind": "video_settings", "vendor": "koophone"}})
    assert r.status_code == 200 and r.json == {"requeued": [action_id], "skipped": []}
    drive(lambda: status_of(redis_client, action_id) == "succeeded", what="the requeued apply")
    assert koophone_instance(sim.url, "phone-1") is not None
    assert get(vendor_api, "/api/failed").json == {"items": [], "total": 0}
    # Requeueing what has not failed does nothing.
    assert post(vendor_api, "/api/failed/requeue", {"all": True}).json == {"requeued": [], "skipped": []}
    assert post(vendor_api, "/api/failed/requeue", {"id": action_id}).status_code == 404


def test_a_failed_live_start_masks_its_stream_key_and_is_requeued_by_id(vendor_api, sim, drive, redis_client):
    set_faults(sim.url, {"metastudio": {"vendor_errors": [
        {"times": 1, "code": "MSS.00000003", "message": "bad request"}]}})
    secret = "very-secret-stream-key-42"
    r = post(vendor_api, "/api/live/jobs", {"room_id": ROOM, "output_url": "rtmp://live.example.com/app",
                                            "stream_key": secret})
    assert r.status_code == 202, r.json
    action_id = r.json["action_id"]
    assert action_id.startswith(f"live-start-{ROOM}-") and secret not in r.get_data(as_text=True)
    drive(lambda: status_of(redis_client, action_id) == "failed", what="the start to fail")

    r = get(vendor_api, "/api/failed")
    [item] = r.json["items"]
    assert item["id"] == action_id and item["event"] is None and item["last_error"]["code"] == "MSS.00000003"
    assert item["params"]["stream_key"] == "***" and secret not in r.get_data(as_text=True)

    r = post(vendor_api, "/api/failed/requeue", {"id": action_id})
    assert r.json == {"requeued": [action_id], "skipped": []}
    drive(lambda: status_of(redis_client, action_id) == "succeeded", what="the requeued start")
    job_id = actions.record(redis_client, action_id)["result"]["job_id"]
    live_job = get(vendor_api, f"/api/live/jobs/{job_id}").json
    assert live_job["timeline"]["start_action"] == action_id and secret not in json.dumps(live_job)


def test_a_failed_event_job_is_listed_and_requeued(api, redis_client):
    event_id = post_live(api, fixture_bytes("metastudio", "shoot_script_switch.json"))
    job = Job.fetch(job_id_for(event_id), connection=redis_client)
    job.retries_left = 0  # out of retries: the next failure is final
    job.save()
    body = redis_client.hget(EVENT_PREFIX + event_id, "body")
    redis_client.hset(EVENT_PREFIX + event_id, "body", b"not json")  # what a bug would trip on
    SimpleWorker([Queue(EVENTS_QUEUE, connection=redis_client)], connection=redis_client).work(
        burst=True, with_scheduler=False)

    [item] = get(api, "/api/failed").json["items"]
    assert item["id"] == job_id_for(event_id) and item["kind"] == "event.process"
    assert item["event_id"] == event_id and item["event"]["status"] == "queued"
    assert "not JSON" in item["last_error"]["message"] and item["requeueable"] is True
    assert get(api, "/api/failed", kind="event").json["total"] == 1
    assert get(api, "/api/failed", kind="video_settings").json["total"] == 0

    redis_client.hset(EVENT_PREFIX + event_id, "body", body)
    r = post(api, "/api/failed/requeue", {"id": job_id_for(event_id)})
    assert r.json == {"requeued": [job_id_for(event_id)], "skipped": []}
    SimpleWorker([Queue(EVENTS_QUEUE, connection=redis_client)], connection=redis_client).work(
        burst=True, with_scheduler=False)
    assert get(api, f"/api/events/{event_id}").json["status"] == "processed"
    assert get(api, "/api/failed").json["total"] == 0


@pytest.mark.parametrize("body, field", [
    ({}, "_body"),
    ({"id": "a", "all": True}, "_body"),
    ({"all": False}, "all"),
    ({"filter": {}}, "filter"),
    ({"filter": {"colour": "red"}}, "filter.colour"),
    ({"id": ""}, "id"),
    ({"id": 5}, "id"),
    ([], "_body"),
])
def test_bad_requeue_bodies_are_400(api, body, field):
    r = post(api, "/api/failed/requeue", body)
    assert r.status_code == 400 and field in r.json["errors"], r.json


# --- live jobs --------------------------------------------------------------------------------

def test_a_live_job_shows_timeline_stream_history_and_converter(vendor_api, sim, drive, redis_client):
    connected = post_live(vendor_api, stream_event(ROOM, "CONNECTED", job_id=JOB))
    post_live(vendor_api, live_event("SHOOT_SCRIPT_SWITCH", room_id=ROOM, job_id=JOB, scene_script_name="Scene 1",
                                     shoot_script_sequence_no="2", shoot_script_title="Paragraph 2"))
    post_live(vendor_api, reply_event(1))
    drive(lambda: events_done(redis_client)
          and status_of(redis_client, f"converter-room-{ROOM}-{connected}") == "succeeded",
          what="the events and the converter")

    r = get(vendor_api, f"/api/live/jobs/{JOB}")
    assert r.status_code == 200, r.json
    doc = r.json
    assert doc["job_id"] == JOB
    timeline = doc["timeline"]
    assert (timeline["room_id"], timeline["scene_script_name"], timeline["shoot_script_sequence_no"],
            timeline["shoot_script_title"]) == (ROOM, "Scene 1", "2", "Paragraph 2")
    assert [x["reply_id"] for x in timeline["finished_replies"]] == ["reply-1"]
    stream = doc["stream"]
    assert stream["room_id"] == ROOM and stream["latest"]["state"] == "CONNECTED"
    assert [(h["event_id"], h["state"], h["job_id"]) for h in stream["history"]] == [(connected, "CONNECTED", JOB)]
    [conv] = doc["converters"]
    assert conv["binding"] == f"room-{ROOM}" and conv["converter_id"]
    assert conv["state"]["auto_push_stream"] is True and conv["state"]["state"] == "CONNECTED"
    assert "secret-stream-key" not in r.get_data(as_text=True)


# --- KooPhone apply, live start -----------------------------------------------------------------

def test_koophone_apply_queues_batches_that_run(vendor_api, sim, drive, redis_client):
    instances = [f"p-{n}" for n in range(150)]
    r = post(vendor_api, "/api/koophone/apply", {"profile": "low", "instance_ids": instances})
    assert r.status_code == 202, r.json
    action_ids = r.json["action_ids"]
    assert len(action_ids) == 2  # batches of at most 100
    drive(lambda: all(status_of(redis_client, a) == "succeeded" for a in action_ids), what="the batches")
    assert koophone_instance(sim.url, "p-149") is not None
    record = actions.record(redis_client, action_ids[0])
    assert record["kind"] == "video_settings.apply" and len(record["params"]["instance_ids"]) == 100


@pytest.mark.parametrize("body, status, field", [
    ({"instance_ids": ["a"]}, 400, "profile"),
    ({"profile": "low"}, 400, "instance_ids"),
    ({"profile": "low", "instance_ids": []}, 400, "instance_ids"),
    ({"profile": "low", "instance_ids": ["x" * 33]}, 400, "instance_ids.0"),
    ({"profile": "low", "instance_ids": [7]}, 400, "instance_ids.0"),
    ({"profile": "nope", "instance_ids": ["a"]}, 400, "profile"),
    ({"profile": "low", "instance_ids": ["a"], "extra": 1}, 400, "extra"),
    ({"profile": None, "instance_ids": ["a"]}, 400, "profile"),
    (["low"], 400, "_body"),
    (b"profile=low", 415, None),
    (b"", 415, None),
])
def test_bad_koophone_bodies(vendor_api, body, status, field):
    r = post(vendor_api, "/api/koophone/apply", body)
    assert r.status_code == status, r.json
    assert r.json["code"] == status
    if field:
        assert field in r.json["errors"], r.json


@pytest.mark.parametrize("body, field", [
    ({"output_url": "rtmp://h/app", "stream_key": "k"}, "room_id"),
    ({"room_id": "../etc", "output_url": "rtmp://h/app", "stream_key": "k"}, "room_id"),
    ({"room_id": ROOM, "output_url": "http://h/app", "stream_key": "k"}, "output_url"),
    ({"room_id": ROOM, "output_url": "rtmp:///app", "stream_key": "k"}, "output_url"),
    ({"room_id": ROOM, "output_url": "rtmp://h/app"}, "stream_key"),
    ({"room_id": ROOM, "output_url": "rtmp://h/app", "stream_key": ""}, "stream_key"),
])
def test_bad_live_start_bodies(vendor_api, body, field):
    r = post(vendor_api, "/api/live/jobs", body)
    assert r.status_code == 400 and field in r.json["errors"], r.json


def test_what_the_configuration_lacks_is_409(api):
    r = post(api, "/api/koophone/apply", {"profile": "low", "instance_ids": ["a"]})
    assert r.status_code == 409 and "[koophone]" in r.json["message"]
    r = post(api, "/api/live/jobs", {"room_id": ROOM, "output_url": "rtmp://h/app", "stream_key": "k"})
    assert r.status_code == 409 and "[metastudio]" in r.json["message"]


def test_oversized_bodies_are_413(make_app):
    client = make_app(admin={"token": TOKEN}, max_body_bytes=1024).test_client()
    r = post(client, "/api/koophone/apply", {"profile": "low", "instance_ids": ["a" * 30] * 100})
    assert r.status_code == 413 and r.json["code"] == 413


def test_redis_down_is_503_not_500(make_app):
    client = make_app(admin={"token": TOKEN}, redis={"url": f"redis://127.0.0.1:{free_port()}/0"}).test_client()
    for r in (get(client, "/api/events"), get(client, "/api/failed"), post(client, "/api/events/abc/replay")):
        assert r.status_code == 503 and r.json["code"] == 503

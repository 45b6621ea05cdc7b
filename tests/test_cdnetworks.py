"""CDNetworks Cloud VoD callbacks: the token's forms, URL-safe Base64 bodies, numbers sent as
strings or numbers, the schemas' error paths, and the video ids indexed with the record. What
every source does (401, 413, 415, 400, re-delivery, the documented examples stored and queued)
is tests/webhook_cases.py's."""

from __future__ import annotations

import base64
import json

import pytest
from rq import Queue

from app.core.events import read_event
from app.core.queues import EVENTS_QUEUE
from tests.helpers import CDN_TOKEN, VOD_TRANSCODE, VOD_UPLOAD, fixture_bytes, fixture_json
from tests.webhook_cases import TRANSCODE_REFS, UPLOAD_IDS

VENDOR = "cdnetworks"


def authed(path: str) -> str:
    return f"{path}?token={CDN_TOKEN}"


def b64(data: bytes) -> bytes:
    """URL-safe, unpadded: the form CDNetworks uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def accepted(client, app, redis_client, path: str, body: bytes) -> dict:
    """Post an authenticated body, assert it was acknowledged and queued; return its record."""
    r = client.post(authed(path), data=body)
    assert r.status_code == 200, r.json
    assert (r.json["code"], r.json["message"]) == (0, "OK")
    event_id = r.json["event_id"]
    record = read_event(app.extensions["mediahook"].store.redis, event_id)
    assert record["status"] == "queued"
    assert record["source"] == "cdnetworks"
    assert f"event-{event_id}" in Queue(EVENTS_QUEUE, connection=redis_client).job_ids
    return record


# --- token ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path,fixture", [(VOD_UPLOAD, "vod_upload.json"), (VOD_TRANSCODE, "vod_transcode.json")])
@pytest.mark.parametrize("query", ["?token=", f"?token={CDN_TOKEN[:-1]}", f"?tok={CDN_TOKEN}", f"?TOKEN={CDN_TOKEN}"])
def test_token_that_is_empty_cut_short_or_misnamed_is_401(client, redis_client, path, fixture, query):
    r = client.post(path + query, data=fixture_bytes(VENDOR, fixture))
    assert r.status_code == 401
    assert r.json == {"code": 401, "message": "unauthorized"}
    assert redis_client.keys("mh:event:*") == []


@pytest.mark.parametrize("path", [VOD_UPLOAD, VOD_TRANSCODE])
def test_token_in_a_header_instead_of_the_query_is_401(client, path):
    r = client.post(path, data=fixture_bytes(VENDOR, "vod_transcode.json"), headers={"token": CDN_TOKEN})
    assert r.status_code == 401


# --- upload callback -----------------------------------------------------------------------

def test_base64_upload_fixture_is_the_documented_example_unpadded_url_safe():
    """The Base64 form (accepted, and stored as sent: webhook_cases) of the very same bytes."""
    text = fixture_bytes(VENDOR, "vod_upload.base64.txt").strip()
    assert base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4)) == fixture_bytes(VENDOR, "vod_upload.json")


def test_padded_base64_upload_is_accepted_too(client, app, redis_client):
    body = base64.urlsafe_b64encode(fixture_bytes(VENDOR, "vod_upload.json"))
    assert accepted(client, app, redis_client, VOD_UPLOAD, body)["refs"]["video_ids"] == UPLOAD_IDS


def test_base64_of_a_bad_upload_is_400_with_the_same_paths(client):
    r = client.post(authed(VOD_UPLOAD), data=b64(fixture_bytes(VENDOR, "vod_upload.missing_and_bad_fields.json")))
    assert r.status_code == 400
    assert set(r.json["errors"]) == {"data.videoListInfo.0.videoId", "data.videoListInfo.1.videoSize"}


@pytest.mark.parametrize("field,value", [
    ("videoSize", "1_000"),  # int() would take it; the vendor sends plain digits
    ("videoSize", "\u0661\u0662"),  # Arabic-Indic digits: int() would take those too
    ("videoSize", -5),
    ("videoSize", True),
    ("videoDuration", 1e400),  # Python's json reads this as inf
    ("videoDuration", "Infinity"),
    ("videoDuration", "nan"),
    ("transcodeState", "9"),
    ("encrypt", "2"),
])
def test_out_of_range_or_odd_numbers_are_400(client, field, value):
    payload = fixture_json(VENDOR, "vod_upload.json")
    payload["data"]["videoListInfo"][1][field] = value
    r = client.post(authed(VOD_UPLOAD), data=json.dumps(payload))
    assert r.status_code == 400
    assert list(r.json["errors"]) == [f"data.videoListInfo.1.{field}"]


@pytest.mark.parametrize("value", ["36", 36, " 36 ", "36.5", 36.5, "3.65e1"])
def test_video_duration_may_be_a_decimal_string_or_number(client, value):
    payload = fixture_json(VENDOR, "vod_upload.json")
    payload["data"]["videoListInfo"][0]["videoDuration"] = value
    assert client.post(authed(VOD_UPLOAD), data=json.dumps(payload)).status_code == 200


@pytest.mark.parametrize("mutate,error_path", [
    (lambda p: p.pop("data"), "data"),
    (lambda p: p["data"].pop("videoListInfo"), "data.videoListInfo"),
    (lambda p: p["data"].__setitem__("videoListInfo", {"videoId": "x"}), "data.videoListInfo"),
    (lambda p: p["data"]["videoListInfo"].__setitem__(0, "9B0F7BA8"), "data.videoListInfo.0"),
    (lambda p: p.pop("code"), "code"),
])
def test_upload_of_the_wrong_shape_is_400_naming_the_path(client, mutate, error_path):
    payload = fixture_json(VENDOR, "vod_upload.json")
    mutate(payload)
    r = client.post(authed(VOD_UPLOAD), data=json.dumps(payload))
    assert r.status_code == 400
    assert error_path in r.json["errors"]


def test_upload_refs_are_capped(client, app, redis_client):
    """A callback listing very many videos still gets a record of bounded size."""
    from app.sources.cdnetworks import MAX_REFS

    payload = {"code": 200, "data": {"videoListInfo": [{"videoId": f"v{i}"} for i in range(MAX_REFS + 20)]}}
    record = accepted(client, app, redis_client, VOD_UPLOAD, json.dumps(payload).encode())
    assert record["refs"]["video_ids"] == [f"v{i}" for i in range(MAX_REFS)]


# --- transcode callback --------------------------------------------------------------------

def test_base64_of_the_enveloped_transcode_callback_is_accepted(client, app, redis_client):
    body = b64(fixture_bytes(VENDOR, "vod_transcode.enveloped.json"))
    record = accepted(client, app, redis_client, VOD_TRANSCODE, body)
    assert record["refs"] == TRANSCODE_REFS


def test_upload_callback_sent_to_the_transcode_endpoint_is_400(client):
    """The envelope is unwrapped, but an upload's data has no videoId."""
    r = client.post(authed(VOD_TRANSCODE), data=fixture_bytes(VENDOR, "vod_upload.json"))
    assert r.status_code == 400
    assert "videoId" in r.json["errors"]


# --- Base64 of what is not a JSON object ----------------------------------------------------

@pytest.mark.parametrize("path", [VOD_UPLOAD, VOD_TRANSCODE])
@pytest.mark.parametrize("decoded", [b"hello, world", b"\x00\x01\x02\xfe\xff binary", b"{\"videoId\": ", b"\xef\xbb"],
                         ids=["text", "binary", "cut-json", "bad-utf8"])
def test_base64_of_non_json_is_415(client, path, decoded):
    r = client.post(authed(path), data=b64(decoded))
    assert r.status_code == 415


@pytest.mark.parametrize("path", [VOD_UPLOAD, VOD_TRANSCODE])
@pytest.mark.parametrize("decoded", [b"[]", b'"9B0F7BA8"', b"123"])
def test_base64_of_json_that_is_not_an_object_is_400(client, path, decoded):
    r = client.post(authed(path), data=b64(decoded))
    assert r.status_code == 400
    assert list(r.json["errors"]) == ["_body"]


def test_record_keeps_the_common_headers_and_none_of_another_source(client, app, redis_client):
    """Kept headers are base.KEPT_HEADERS plus the source's own: MetaStudio's signed time is not
    CDNetworks' to keep."""
    r = client.post(authed(VOD_TRANSCODE), data=fixture_bytes(VENDOR, "vod_transcode.json"),
                    headers={"X-Request-Id": "req-42", "x-hw-mss-time": "66df9308", "X-Other": "x"})
    assert r.status_code == 200, r.json
    headers = read_event(app.extensions["mediahook"].store.redis, r.json["event_id"])["headers"]
    assert headers["X-Request-Id"] == "req-42"
    assert not {"x-hw-mss-time", "x-other"} & {k.lower() for k in headers}

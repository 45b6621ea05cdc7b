"""CDNetworks Cloud VoD callbacks: the token, JSON and URL-safe Base64 bodies, numbers sent as
strings or numbers, error paths, and the video ids indexed with the record."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from rq import Queue

from app import create_app
from app.core.config import build
from app.core.queues import EVENTS_QUEUE
from tests.helpers import CDN_TOKEN, VOD_TRANSCODE, VOD_UPLOAD, fixture_bytes, fixture_json

VENDOR = "cdnetworks"
UPLOAD_IDS = ["9B0F7BA8BCB9D056D4C24ADDBF821D10", "E869FC95F3C7493ED56E8751C4AA7BEE"]
TRANSCODE_ID = "9B0F7BA8BCB9D056D4C24ADDBF821D10"


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
    record = app.extensions["mediahook"].store.get(event_id)
    assert record["status"] == "queued"
    assert record["source"] == "cdnetworks"
    assert f"event-{event_id}" in Queue(EVENTS_QUEUE, connection=redis_client).job_ids
    return record


# --- token ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path,fixture", [(VOD_UPLOAD, "vod_upload.json"), (VOD_TRANSCODE, "vod_transcode.json")])
def test_right_token_is_accepted(client, path, fixture):
    assert client.post(authed(path), data=fixture_bytes(VENDOR, fixture)).status_code == 200


@pytest.mark.parametrize("path,fixture", [(VOD_UPLOAD, "vod_upload.json"), (VOD_TRANSCODE, "vod_transcode.json")])
@pytest.mark.parametrize("query", ["", "?token=", "?token=wrong-token-value", f"?token={CDN_TOKEN[:-1]}",
                                   f"?tok={CDN_TOKEN}", f"?TOKEN={CDN_TOKEN}"])
def test_wrong_or_missing_token_is_401(client, redis_client, path, fixture, query):
    r = client.post(path + query, data=fixture_bytes(VENDOR, fixture))
    assert r.status_code == 401
    assert r.json == {"code": 401, "message": "unauthorized"}
    assert redis_client.keys("mh:event:*") == []


@pytest.mark.parametrize("path", [VOD_UPLOAD, VOD_TRANSCODE])
def test_token_in_a_header_instead_of_the_query_is_401(client, path):
    r = client.post(path, data=fixture_bytes(VENDOR, "vod_transcode.json"), headers={"token": CDN_TOKEN})
    assert r.status_code == 401


@pytest.mark.parametrize("path", [VOD_UPLOAD, VOD_TRANSCODE])
def test_source_without_config_refuses_with_401(base_config, path):
    """No [sources.cdnetworks] section: fail closed, whatever token is sent."""
    config = copy.deepcopy(base_config)
    del config["sources"]["cdnetworks"]
    app = create_app(build(config, env={}), start_drainer=False)
    try:
        body = fixture_bytes(VENDOR, "vod_transcode.json")
        for query in (f"?token={CDN_TOKEN}", "", "?token="):
            assert app.test_client().post(path + query, data=body).status_code == 401
    finally:
        app.extensions["mediahook"].store.redis.close()


# --- upload callback -----------------------------------------------------------------------

def test_verbatim_upload_example_is_accepted_with_its_video_ids(client, app, redis_client):
    body = fixture_bytes(VENDOR, "vod_upload.json")
    record = accepted(client, app, redis_client, VOD_UPLOAD, body)
    assert record["type"] == "VOD_UPLOAD"
    assert record["refs"]["video_ids"] == UPLOAD_IDS
    assert record["body"] == body


def test_base64_upload_is_accepted_and_stored_as_sent(client, app, redis_client):
    """URL-safe, unpadded Base64 of the same JSON: decoded to validate, kept as received."""
    body = fixture_bytes(VENDOR, "vod_upload.base64.txt")
    text = body.strip()
    assert base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4)) == fixture_bytes(VENDOR, "vod_upload.json")
    record = accepted(client, app, redis_client, VOD_UPLOAD, body)
    assert record["refs"]["video_ids"] == UPLOAD_IDS
    assert record["body"] == body


def test_padded_base64_upload_is_accepted_too(client, app, redis_client):
    body = base64.urlsafe_b64encode(fixture_bytes(VENDOR, "vod_upload.json"))
    assert accepted(client, app, redis_client, VOD_UPLOAD, body)["refs"]["video_ids"] == UPLOAD_IDS


def test_numbers_as_numbers_upload_is_accepted(client, app, redis_client):
    """videoSize, videoState, transcodeState... as JSON numbers, plus a field the docs lack."""
    body = fixture_bytes(VENDOR, "vod_upload.numbers_as_numbers.json")
    record = accepted(client, app, redis_client, VOD_UPLOAD, body)
    assert record["refs"]["video_ids"] == [UPLOAD_IDS[0]]


def test_missing_video_id_and_non_numeric_video_size_are_400_naming_both(client, redis_client):
    r = client.post(authed(VOD_UPLOAD), data=fixture_bytes(VENDOR, "vod_upload.missing_and_bad_fields.json"))
    assert r.status_code == 400
    assert r.json["code"] == 400
    assert set(r.json["errors"]) == {"data.videoListInfo.0.videoId", "data.videoListInfo.1.videoSize"}
    assert redis_client.keys("mh:event:*") == []


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

@pytest.mark.parametrize("fixture", ["vod_transcode.json", "vod_transcode.base64.txt", "vod_transcode.enveloped.json"])
def test_transcode_callback_is_accepted_in_every_form(client, app, redis_client, fixture):
    """Plain JSON, Base64 of it, or wrapped in the upload callback's {code, data, message}."""
    body = fixture_bytes(VENDOR, fixture)
    record = accepted(client, app, redis_client, VOD_TRANSCODE, body)
    assert record["type"] == "VOD_TRANSCODE"
    assert record["refs"] == {"video_ids": [TRANSCODE_ID]}
    assert record["body"] == body


def test_base64_of_the_enveloped_transcode_callback_is_accepted(client, app, redis_client):
    body = b64(fixture_bytes(VENDOR, "vod_transcode.enveloped.json"))
    record = accepted(client, app, redis_client, VOD_TRANSCODE, body)
    assert record["refs"] == {"video_ids": [TRANSCODE_ID]}


def test_transcode_missing_video_id_is_400(client, redis_client):
    r = client.post(authed(VOD_TRANSCODE), data=fixture_bytes(VENDOR, "vod_transcode.missing_video_id.json"))
    assert r.status_code == 400
    assert set(r.json["errors"]) == {"videoId", "encrypt"}
    assert redis_client.keys("mh:event:*") == []


def test_upload_callback_sent_to_the_transcode_endpoint_is_400(client):
    """The envelope is unwrapped, but an upload's data has no videoId."""
    r = client.post(authed(VOD_TRANSCODE), data=fixture_bytes(VENDOR, "vod_upload.json"))
    assert r.status_code == 400
    assert "videoId" in r.json["errors"]


# --- neither JSON nor Base64 of JSON --------------------------------------------------------

@pytest.mark.parametrize("path", [VOD_UPLOAD, VOD_TRANSCODE])
@pytest.mark.parametrize("body", [
    b"this is neither JSON nor Base64!",
    b"<xml>nope</xml>",
    b"{not json",
    b"",
    b"\xff\xfe\x00garbage",
], ids=["text", "xml", "broken-json", "empty", "binary"])
def test_garbage_body_is_415(client, path, body):
    r = client.post(authed(path), data=body)
    assert r.status_code == 415
    assert r.json["code"] == 415


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


@pytest.mark.parametrize("path", [VOD_UPLOAD, VOD_TRANSCODE])
@pytest.mark.parametrize("body", [b"0", b"-1", b"true", b"null"])
def test_json_scalar_body_is_400_like_any_non_object_json(client, path, body):
    r = client.post(authed(path), data=body)
    assert r.status_code == 400, r.json
    assert list(r.json["errors"]) == ["_body"]

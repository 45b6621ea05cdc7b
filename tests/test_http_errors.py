"""Every error is a JSON answer with a ``code`` and a ``message``; the body size limit holds over
real HTTP (Content-Length and chunked); secrets never come back in an error. Per hook (405, 413,
odd and mutated bodies never a 500): tests/webhook_cases.py."""

from __future__ import annotations

import json

import pytest
import requests

from app.sources.metastudio import signature_headers
from tests.helpers import (
    CDN_TOKEN,
    LIVE_EVENTS,
    MS_KEY,
    MS_TOKEN,
    VOD_TRANSCODE,
    VOD_UPLOAD,
    live_event,
    signed_path,
)
from tests.webhook_cases import CASE_BY_PATH, LIMIT, check_client, json_answer, padded


def authed(path: str) -> str:
    """The path with valid credentials for its source, as its case in webhook_cases sends them."""
    url, headers = CASE_BY_PATH[path].credentials(path)
    assert not headers
    return url


def check_http(r: requests.Response) -> dict:
    return json_answer(r.status_code, r.headers.get("Content-Type"), r.content)


def small_transcode(video_id: str = "vid-1") -> bytes:
    return json.dumps({"videoId": video_id}).encode()


# --- the shape of every error --------------------------------------------------------------

ERROR_CASES = {
    "400 invalid payload": (LIVE_EVENTS, True, live_event("REPLY_COMMAND_FINISH", room_id="r", job_id="j"), 400),
    "400 not an object": (VOD_UPLOAD, True, b"[1, 2]", 400),
    "401 unauthorized": (VOD_TRANSCODE, False, small_transcode(), 401),
    "404 unknown path": ("/hooks/nobody/here", False, b"{}", 404),
    "404 unknown source endpoint": ("/hooks/metastudio/nope", False, b"{}", 404),
    "413 too large": (VOD_TRANSCODE, True, b" " * (LIMIT + 1), 413),
    "415 not json": (LIVE_EVENTS, True, b"<html></html>", 415),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_error_answers_are_json_with_code_and_message(make_app, case):
    path, with_auth, body, status = ERROR_CASES[case]
    client = make_app(max_body_bytes=LIMIT).test_client()
    r = client.post(authed(path) if with_auth else path, data=body)
    assert r.status_code == status
    check_client(r)


@pytest.mark.parametrize("path", ["/", "/hooks", "/hooks/metastudio", "/hooks/metastudio/live-events/extra",
                                  "/hooks/cdnetworks/vod-upload.json", "/favicon.ico"])
def test_unknown_path_is_404_json(client, path):
    for r in (client.get(path), client.post(path, data=b"{}")):
        assert r.status_code == 404
        check_client(r)


def test_unexpected_server_error_is_500_json_without_a_traceback(make_app):
    """A bug is answered as JSON too, and the exception text stays in the log."""
    app = make_app()

    @app.post("/boom")
    def boom():
        raise RuntimeError("secret internals in /srv/app.py line 3")

    r = app.test_client().post("/boom")
    assert r.status_code == 500
    doc = check_client(r)
    assert "secret internals" not in r.get_data(as_text=True)
    assert "Traceback" not in doc["message"]


# --- body size: test client ------------------------------------------------------------------

def test_content_length_over_the_limit_is_413_even_without_auth(make_app):
    """Size is checked before anything else: an unauthenticated flood is not read."""
    client = make_app(max_body_bytes=LIMIT).test_client()
    assert client.post(VOD_UPLOAD, data=b"x" * (LIMIT * 8)).status_code == 413

# --- body size: real gunicorn ----------------------------------------------------------------

def chunks(body: bytes, size: int = 100):
    """A generator body: requests sends it with Transfer-Encoding: chunked and no Content-Length."""
    for i in range(0, len(body), size):
        yield body[i:i + size]


def test_over_the_limit_with_content_length_is_413_over_http(gunicorn_server, redis_client):
    base = gunicorn_server(max_body_bytes=LIMIT)
    r = requests.post(base + authed(VOD_TRANSCODE), data=padded(small_transcode(), LIMIT + 1), timeout=10)
    assert r.status_code == 413
    check_http(r)
    r = requests.post(base + authed(VOD_TRANSCODE), data=b"x" * (4 * LIMIT), timeout=10)
    assert r.status_code == 413
    check_http(r)
    assert redis_client.keys("mh:event:*") == []


def test_at_the_limit_is_accepted_over_http_with_content_length_and_chunked(gunicorn_server, redis_client):
    base = gunicorn_server(max_body_bytes=LIMIT)
    at_limit = padded(small_transcode("by-length"), LIMIT)
    r = requests.post(base + authed(VOD_TRANSCODE), data=at_limit, timeout=10)
    assert r.status_code == 200, r.text
    check_http(r)

    at_limit = padded(small_transcode("by-chunks"), LIMIT)
    r = requests.post(base + authed(VOD_TRANSCODE), data=chunks(at_limit), timeout=10)
    assert "Content-Length" not in r.request.headers and r.request.headers["Transfer-Encoding"] == "chunked"
    assert r.status_code == 200, r.text
    assert len(redis_client.keys("mh:event:*")) == 2


def test_chunked_under_the_limit_is_accepted_and_stored_whole_over_http(gunicorn_server, redis_client):
    base = gunicorn_server(max_body_bytes=LIMIT)
    body = padded(small_transcode("v-small"), 700)
    r = requests.post(base + authed(VOD_TRANSCODE), data=chunks(body, 7), timeout=10)
    assert r.status_code == 200, r.text
    event_id = r.json()["event_id"]
    assert redis_client.hget(f"mh:event:{event_id}", "body") == body


@pytest.mark.parametrize("shape", ["valid-json-then-more", "junk"])
def test_chunked_body_over_the_limit_is_413_over_http(gunicorn_server, redis_client, shape):
    """No Content-Length to check up front: the limit must hold while reading too."""
    base = gunicorn_server(max_body_bytes=LIMIT)
    if shape == "valid-json-then-more":
        # The first LIMIT bytes are a complete, valid callback: cutting it there must not "work".
        body = padded(small_transcode("cut-here"), LIMIT) + b" " * 200
    else:
        body = b"x" * (8 * LIMIT)
    r = requests.post(base + authed(VOD_TRANSCODE), data=chunks(body), timeout=10)
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 413, r.text
    check_http(r)
    assert redis_client.keys("mh:event:*") == []


# --- secrets never come back --------------------------------------------------------------------

STREAM_KEY = "sk-LIVE-7f3a9c1e5b2d48a6"


@pytest.mark.parametrize("message", [
    dict(room_id="r", job_id="j", output_url="rtmp://x/y", stream_key=STREAM_KEY, state="ON_FIRE"),
    dict(room_id="r", output_url="rtmp://x/y", stream_key=STREAM_KEY),
    dict(room_id="r", job_id="j", output_url=7, stream_key=STREAM_KEY, state="END"),
    dict(room_id="r", job_id="j", output_url="rtmp://x/y", stream_key=STREAM_KEY, state=STREAM_KEY),
    dict(room_id=STREAM_KEY * 20, job_id="j", output_url="rtmp://x/y", stream_key=STREAM_KEY, state="END"),
    dict(room_id="r", job_id="j", output_url="rtmp://x/y", stream_key=[STREAM_KEY], state="END"),
    dict(room_id="r", job_id="j", output_url="rtmp://x/y", stream_key={"value": STREAM_KEY}, state="END"),
], ids=["bad-state", "missing-fields", "bad-url-type", "key-as-state", "key-in-long-room", "key-as-list",
        "key-as-object"])
def test_400_for_an_rtmp_event_does_not_echo_the_stream_key(client, message):
    r = client.post(signed_path(), data=live_event("RTMP_STREAM_STATE_CHANGE", **message))
    assert r.status_code == 400
    check_client(r)
    assert STREAM_KEY.encode() not in r.get_data()
    assert STREAM_KEY[3:15].encode() not in r.get_data()


def test_400_for_a_broken_message_does_not_echo_the_stream_key(client):
    body = json.dumps({"event_type": "RTMP_STREAM_STATE_CHANGE",
                       "message": '{"room_id":"r","job_id":"j","stream_key":"' + STREAM_KEY + '","state":'}).encode()
    r = client.post(signed_path(), data=body)
    assert r.status_code == 400
    assert STREAM_KEY.encode() not in r.get_data()


def test_401_does_not_echo_the_token(make_app):
    """Neither the configured token nor the wrong one that was sent appears in the answer."""
    client = make_app(sources={"metastudio": {"auth_type": "NONE", "token": MS_TOKEN}}).test_client()
    sent = "guess-" + MS_TOKEN
    r = client.post(f"{LIVE_EVENTS}?token={sent}", data=b"{}")
    assert r.status_code == 401
    for secret in (MS_TOKEN, sent):
        assert secret.encode() not in r.get_data()
        assert all(secret not in value for _, value in r.headers)


def test_401_does_not_echo_the_cdnetworks_token_or_a_signature(client):
    wrong = CDN_TOKEN + "-nope"
    r = client.post(f"{VOD_UPLOAD}?token={wrong}", data=b"{}")
    assert r.status_code == 401
    assert CDN_TOKEN.encode() not in r.get_data()
    headers = signature_headers("http://elsewhere" + LIVE_EVENTS, MS_KEY)
    r = client.post(LIVE_EVENTS, data=b"{}", headers=headers)
    assert r.status_code == 401
    assert headers["x-hw-mss-secret"].encode() not in r.get_data()
    assert MS_KEY.encode() not in r.get_data()

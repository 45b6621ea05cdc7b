"""Every error is a JSON answer with a ``code`` and a ``message``; client input never gets a 500;
the body size limit holds for the test client and over real HTTP (Content-Length and chunked);
secrets never come back in an error."""

from __future__ import annotations

import base64
import json
import random

import pytest
import requests

from app.sources.metastudio import signature_headers
from tests.helpers import (
    CDN_TOKEN,
    FIXTURES,
    LIVE_EVENTS,
    MS_KEY,
    MS_TOKEN,
    VOD_TRANSCODE,
    VOD_UPLOAD,
    live_event,
    signed_path,
)

HOOKS = [LIVE_EVENTS, VOD_UPLOAD, VOD_TRANSCODE]
LIMIT = 1024  # the smallest max_body_bytes the config allows
CLIENT_STATUSES = {200, 400, 413, 415}


def authed(path: str) -> str:
    """The path with valid auth for its source (MSS_A for MetaStudio, the token for CDNetworks)."""
    return signed_path(path) if path == LIVE_EVENTS else f"{path}?token={CDN_TOKEN}"


def json_answer(status: int, content_type: str | None, data: bytes) -> dict:
    """Assert an answer is a JSON object with the code/message shape; return it."""
    assert content_type is not None and content_type.split(";")[0].strip() == "application/json", (status, data[:200])
    doc = json.loads(data)
    assert isinstance(doc, dict), doc
    assert isinstance(doc.get("message"), str) and doc["message"], doc
    assert doc.get("code") == (0 if status == 200 else status), (status, doc)
    return doc


def check_client(r) -> dict:
    return json_answer(r.status_code, r.headers.get("Content-Type"), r.get_data())


def check_http(r: requests.Response) -> dict:
    return json_answer(r.status_code, r.headers.get("Content-Type"), r.content)


def padded(body: bytes, size: int) -> bytes:
    """A JSON body made exactly ``size`` bytes long with trailing whitespace (still the same JSON)."""
    assert len(body) <= size
    return body + b" " * (size - len(body))


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


@pytest.mark.parametrize("path", HOOKS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_a_hook_are_405_json_with_an_allow_header(client, path, method):
    r = client.open(authed(path), method=method)
    assert r.status_code == 405
    check_client(r)
    assert "POST" in {m.strip() for m in r.headers["Allow"].split(",")}


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

@pytest.mark.parametrize("path", HOOKS)
def test_content_length_over_max_body_bytes_is_413(make_app, redis_client, path):
    client = make_app(max_body_bytes=LIMIT).test_client()
    r = client.post(authed(path), data=padded(small_transcode(), LIMIT + 1))
    assert r.status_code == 413
    check_client(r)
    assert redis_client.keys("mh:event:*") == []


def test_content_length_over_the_limit_is_413_even_without_auth(make_app):
    """Size is checked before anything else: an unauthenticated flood is not read."""
    client = make_app(max_body_bytes=LIMIT).test_client()
    assert client.post(VOD_UPLOAD, data=b"x" * (LIMIT * 8)).status_code == 413


@pytest.mark.parametrize("path", HOOKS)
def test_body_exactly_at_max_body_bytes_is_accepted(make_app, path):
    client = make_app(max_body_bytes=LIMIT).test_client()
    body = small_transcode() if path == VOD_TRANSCODE else (
        live_event("REPLY_COMMAND_FINISH", room_id="r", job_id="j", reply_id="x") if path == LIVE_EVENTS
        else json.dumps({"code": 200, "data": {"videoListInfo": [{"videoId": "v"}]}}).encode())
    r = client.post(authed(path), data=padded(body, LIMIT))
    assert r.status_code == 200, r.json
    assert client.application.extensions["mediahook"].store.get(r.json["event_id"])["body"] == padded(body, LIMIT)


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


# --- never a 500 for client input --------------------------------------------------------------

CONTENT_TYPES = [None, "application/json", "application/json; charset=latin-1", "text/plain",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz",
                 "application/octet-stream", "application/xml", "garbage/;;;="]


def odd_bodies(rng: random.Random) -> list[bytes]:
    """Fixed nasties first, then random ones from a seeded generator (reproducible)."""
    deep_message = b'{"event_type":"RTMP_STREAM_STATE_CHANGE","message":"' + b"[" * 100000 + b'"}'
    long_number = b'{"event_type":"SHOOT_SCRIPT_SWITCH","message":"{\\"room_id\\":\\"r\\",\\"job_id\\":\\"j\\",' \
                  b'\\"shoot_script_sequence_no\\":' + b"9" * 5000 + b'}"}'
    fixed = [
        b"", b" ", b"\n\r\t", b"\x00", b"\x00" * 1000, b"{\x00}", b'{"event_type":"A\x00B"}',
        b"[" * 100000, b"{" * 100000, b'{"a":' * 50000, b"]" * 1000, deep_message, long_number,
        b"9" * 5000, b"-" + b"9" * 100000, b"1e999999", b"-1e-999999", b"NaN", b"Infinity", b"[NaN, -Infinity]",
        b'{"videoId": 1e400, "encrypt": NaN}',
        b'{"code": 1e400, "data": {"videoListInfo": [{"videoId": "v", "videoDuration": Infinity}]}}',
        b"\xff\xfe\xfd", b'{"event_type": "\xff\xfe"}', b"\xef\xbb\xbf{}",
        b'"\\ud800"', b'{"videoId": "\\ud800\\udfff\\ud800"}',
        '{"videoId": "ünïcødé 视频"}'.encode("utf-16"), '{"videoId": "x"}'.encode("utf-32"),
        b"null", b"true", b"0", b"[]", b"{}", b'{"":""}', b'{"event_type": {}}', b'{"message": "x", "event_type": []}',
        b'{"data": {"videoListInfo": [' + b"{}," * 5000 + b"{}]}}",
        b'{"data": {"videoListInfo": [' + b"null," * 5000 + b"null]}}",
        b'{"videoId": "v", "videoUrl": [' + b"[" * 900 + b"]" * 900 + b"]}",
        b'{"videoId": "v", "extra": ' + b"[" * 900 + b"]" * 900 + b"}",
        b'{"videoId": "v", "extra": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        base64.urlsafe_b64encode(b"[" * 100000), base64.urlsafe_b64encode(b"\x00" * 100), b"====", b"-_-_", b"QQ",
        b"%7B%7D", b"a=1&b=2", b"--xyz\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--xyz--\r\n",
        b"x" * (1024 * 1024 + 1),  # over the default limit: 413
    ]
    randoms = []
    for _ in range(150):
        kind = rng.randrange(4)
        n = rng.randrange(0, 3000)
        if kind == 0:
            randoms.append(rng.randbytes(n))
        elif kind == 1:
            randoms.append(bytes(rng.choice(b'{}[]",:0123456789.eE+-tfn \\u"abcXYZ') for _ in range(n)))
        elif kind == 2:
            randoms.append(base64.urlsafe_b64encode(rng.randbytes(n)).rstrip(b"="))
        else:
            randoms.append(b'{"event_type":"' + rng.choice([b"RTMP_STREAM_STATE_CHANGE", b"SHOOT_SCRIPT_SWITCH", b"X"])
                           + b'","message":"' + rng.randbytes(n).replace(b'"', b"").replace(b"\\", b"") + b'"}')
    return fixed + randoms


@pytest.mark.parametrize("path", HOOKS)
def test_odd_bodies_never_get_a_500(client, path):
    """Whatever arrives with valid auth, the answer is a client status with a JSON body."""
    rng = random.Random(f"odd-bodies-{path}")
    for i, body in enumerate(odd_bodies(rng)):
        content_type = CONTENT_TYPES[i % len(CONTENT_TYPES)]
        r = client.post(authed(path), data=body, content_type=content_type)
        assert r.status_code in CLIENT_STATUSES, (i, body[:80], r.status_code, r.get_data()[:300])
        check_client(r)


WEIRD_VALUES = [None, True, False, 0, -1, 2 ** 64, -(2 ** 63), 1.5, 1e308, -0.0, float("nan"), float("inf"),
                "", " ", "x" * 5000, "\x00", "\ud800", "1_000", "\uff11\uff12", " 12 ", "12.5", "0x10", "-", "null",
                [], {}, [[[]]], {"a": {"b": [1, "2"]}}, ["v1", "v2"], [None], [{}], "{}", '{"room_id": 1}']


def mutate(value, rng: random.Random, depth: int = 0):
    """A copy of a decoded JSON value with one random part replaced, removed or retyped.
    JSON text inside a string (MetaStudio's message) is mutated inside, too."""
    if isinstance(value, str) and value[:1] == "{" and rng.random() < 0.8:
        try:
            return json.dumps(mutate(json.loads(value), rng, depth + 1))
        except ValueError:  # the fixture's own broken message: replace it below
            pass
    # The root stays an object: a scalar body is another test's business.
    if isinstance(value, dict) and value and (depth == 0 or rng.random() < 0.85):
        out = dict(value)
        key = rng.choice(list(out))
        roll = rng.random()
        if roll < 0.15:
            del out[key]
        elif roll < 0.2:
            out["unexpected_" + str(rng.randrange(100))] = rng.choice(WEIRD_VALUES)
        else:
            out[key] = mutate(out[key], rng, depth + 1)
        return out
    if isinstance(value, list) and value and rng.random() < 0.85:
        out = list(value)
        i = rng.randrange(len(out))
        out[i] = mutate(out[i], rng, depth + 1)
        return out
    return rng.choice(WEIRD_VALUES)


FIXTURE_PAYLOADS = [  # (endpoint, fixture) for every fixture that is JSON
    (LIVE_EVENTS if p.parent.name == "metastudio" else (VOD_TRANSCODE if "transcode" in p.name else VOD_UPLOAD),
     f"{p.parent.name}/{p.name}")
    for p in sorted(FIXTURES.glob("*/*.json"))
]


@pytest.mark.parametrize("path,fixture", FIXTURE_PAYLOADS)
def test_mutated_fixture_payloads_get_200_or_400_never_500(client, path, fixture):
    """Well-formed JSON of every odd type at every place the schemas look: a verdict, not a crash."""
    rng = random.Random(f"mutate-{fixture}")
    payload = json.loads((FIXTURES / fixture).read_bytes())
    for i in range(120):
        mutated = mutate(payload, rng)
        body = json.dumps(mutated).encode()
        if path != LIVE_EVENTS and i % 3 == 0:
            body = base64.urlsafe_b64encode(body).rstrip(b"=")
        r = client.post(authed(path), data=body, content_type="application/json")
        assert r.status_code in (200, 400), (i, body[:300], r.status_code, r.get_data()[:300])
        check_client(r)


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

"""The contract every callback source keeps, run once per source endpoint (after django-anymail's
tests/webhook_cases.py): credentials refused without or with a wrong secret (401 JSON, nothing
stored), a source without config refusing everything, 413 before anything else, 415 for a body
that does not decode, 400 naming each field path, an unknown event type acknowledged and ignored,
a re-delivery acknowledged once and queued once, and 2xx meaning stored and queued.

A source joins by one ``HookCase`` per endpoint in ``CASES`` (tests/test_webhooks.py runs the
suite, and fails while a registered endpoint has no case). What only one vendor does (signature
details, Base64 bodies, its schema's quirks) stays in tests/test_<vendor>.py.
"""

from __future__ import annotations

import base64
import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from rq import Queue
from rq.job import Job

from app import create_app
from app.core.config import build
from app.core.events import job_id_for, read_event
from app.core.queues import EVENTS_QUEUE
from app.sources import SOURCES, cdnetworks, metastudio
from app.sources.base import Endpoint, hook_path
from tests.helpers import CDN_TOKEN, FIXTURES, MS_KEY, fixture_bytes, signed_path

LIMIT = 1024  # the smallest max_body_bytes the config allows
CLIENT_STATUSES = {200, 400, 413, 415}
UNAUTHORIZED = {"code": 401, "message": "unauthorized"}

Credentials = Callable[[str], tuple[str, dict[str, str]]]  # hook path -> (path and query, headers)


@dataclass(frozen=True)
class Accepted:
    """A fixture the endpoint must accept: the event type it carries and the refs indexed."""

    fixture: str
    event_type: str
    refs: dict[str, Any]


@dataclass(frozen=True)
class HookCase:
    """How the shared suite drives one source endpoint, against the tests' base config."""

    source: str
    endpoint: str
    accepted: tuple[Accepted, ...]  # the vendor's documented example first, then its variants
    invalid: str  # a fixture that breaks the schema...
    invalid_paths: frozenset[str]  # ...and exactly the field paths its 400 names
    small: str  # a valid fixture small enough to pad to LIMIT
    credentials: Credentials  # valid ones, as the vendor sends them
    wrong_credentials: Credentials  # the same form, with a wrong secret
    unknown: Accepted | None = None  # a well-formed event type we do not handle (None: one type per endpoint)
    fixture_glob: str = "*.json"  # the fixtures of this endpoint (every valid JSON one is mutated)

    def __str__(self) -> str:
        return f"{self.source}/{self.endpoint}"

    @property
    def path(self) -> str:
        return hook_path(self.source, self.endpoint)

    @property
    def registered(self) -> Endpoint:
        return next(e for e in SOURCES[self.source].ENDPOINTS if e.path == self.endpoint)

    def body(self, fixture: str) -> bytes:
        return fixture_bytes(self.source, fixture)

    def post(self, client: Any, body: bytes, auth: str = "valid", **kwargs: Any) -> Any:
        """POST ``body`` with valid credentials, ``"wrong"`` ones or ``"none"``."""
        url, headers = {"valid": self.credentials, "wrong": self.wrong_credentials,
                        "none": lambda path: (path, {})}[auth](self.path)
        return client.post(url, data=body, headers=headers, **kwargs)


def _token(token: str) -> Credentials:
    return lambda path: (f"{path}?token={token}", {})


def _mss_a(key: str) -> Credentials:
    return lambda path: (signed_path(path, key=key), {})


MS_ROOM, MS_JOB = "26f065244f754b3aa853b649a21aaf66", "e87104f76d7546ce8a46ac6b04c49c3c"
MS_REFS = {"room_id": MS_ROOM, "job_id": MS_JOB}
UPLOAD_IDS = ["9B0F7BA8BCB9D056D4C24ADDBF821D10", "E869FC95F3C7493ED56E8751C4AA7BEE"]
TRANSCODE_REFS = {"video_ids": ["9B0F7BA8BCB9D056D4C24ADDBF821D10"]}
WRONG_TOKEN = "wrong-token-value"
WRONG_KEY = "another-key-0123456789abcdefghij"

CASES = (
    HookCase(
        metastudio.NAME, metastudio.LIVE_EVENTS_PATH,
        accepted=(
            Accepted("rtmp_stream_state_change.json", metastudio.STREAM_STATE_EVENT, MS_REFS),
            Accepted("shoot_script_switch.json", metastudio.SCRIPT_SWITCH_EVENT, MS_REFS),
            Accepted("shoot_script_switch.sequence_no_number.json", metastudio.SCRIPT_SWITCH_EVENT, MS_REFS),
            Accepted("rtmp_stream_state_change.extra_fields.json", metastudio.STREAM_STATE_EVENT, MS_REFS),
            Accepted("reply_command_finish.json", metastudio.REPLY_FINISH_EVENT, MS_REFS),
        ),
        invalid="rtmp_stream_state_change.missing_fields.json",
        invalid_paths=frozenset({"message.job_id", "message.output_url", "message.state"}),
        small="reply_command_finish.json",
        credentials=_mss_a(key=MS_KEY),
        wrong_credentials=_mss_a(key=WRONG_KEY),
        unknown=Accepted("unknown_event_type.json", "LIVE_VIEWER_COUNT", {}),
    ),
    HookCase(
        cdnetworks.NAME, cdnetworks.UPLOAD_PATH,
        accepted=(
            Accepted("vod_upload.json", cdnetworks.UPLOAD_EVENT, {"video_ids": UPLOAD_IDS}),
            Accepted("vod_upload.base64.txt", cdnetworks.UPLOAD_EVENT, {"video_ids": UPLOAD_IDS}),
            Accepted("vod_upload.numbers_as_numbers.json", cdnetworks.UPLOAD_EVENT, {"video_ids": UPLOAD_IDS[:1]}),
        ),
        invalid="vod_upload.missing_and_bad_fields.json",
        invalid_paths=frozenset({"data.videoListInfo.0.videoId", "data.videoListInfo.1.videoSize"}),
        small="vod_upload.minimal.json",
        credentials=_token(CDN_TOKEN),
        wrong_credentials=_token(WRONG_TOKEN),
        fixture_glob="vod_upload*.json",
    ),
    HookCase(
        cdnetworks.NAME, cdnetworks.TRANSCODE_PATH,
        accepted=(
            Accepted("vod_transcode.json", cdnetworks.TRANSCODE_EVENT, TRANSCODE_REFS),
            Accepted("vod_transcode.base64.txt", cdnetworks.TRANSCODE_EVENT, TRANSCODE_REFS),
            Accepted("vod_transcode.enveloped.json", cdnetworks.TRANSCODE_EVENT, TRANSCODE_REFS),
        ),
        invalid="vod_transcode.missing_video_id.json",
        invalid_paths=frozenset({"videoId", "encrypt"}),
        small="vod_transcode.minimal.json",
        credentials=_token(CDN_TOKEN),
        wrong_credentials=_token(WRONG_TOKEN),
        fixture_glob="vod_transcode*.json",
    ),
)
CASE_BY_PATH = {case.path: case for case in CASES}


# --- checks shared with tests/test_http_errors.py ----------------------------------------------

def json_answer(status: int, content_type: str | None, data: bytes) -> dict:
    """Assert an answer is a JSON object with the code/message shape; return it."""
    assert content_type is not None and content_type.split(";")[0].strip() == "application/json", (status, data[:200])
    doc = json.loads(data)
    assert isinstance(doc, dict), doc
    assert isinstance(doc.get("message"), str) and doc["message"], doc
    assert doc.get("code") == (0 if status == 200 else status), (status, doc)
    return doc


def check_client(r: Any) -> dict:
    """json_answer for a Flask test client response."""
    return json_answer(r.status_code, r.headers.get("Content-Type"), r.get_data())


def padded(body: bytes, size: int) -> bytes:
    """A JSON body made exactly ``size`` bytes long with trailing whitespace (still the same JSON)."""
    assert len(body) <= size
    return body + b" " * (size - len(body))


def stored(redis_client: Any) -> list:
    return redis_client.keys("mh:event:*")


def queued(redis_client: Any) -> list[str]:
    return Queue(EVENTS_QUEUE, connection=redis_client).job_ids


# --- bodies no endpoint may answer with a 500 ---------------------------------------------------

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


WEIRD_VALUES = [None, True, False, 0, -1, 2 ** 64, -(2 ** 63), 1.5, 1e308, -0.0, float("nan"), float("inf"),
                "", " ", "x" * 5000, "\x00", "\ud800", "1_000", "\uff11\uff12", " 12 ", "12.5", "0x10", "-", "null",
                [], {}, [[[]]], {"a": {"b": [1, "2"]}}, ["v1", "v2"], [None], [{}], "{}", '{"room_id": 1}']


def mutate(value: Any, rng: random.Random, depth: int = 0) -> Any:
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


# --- the suite ------------------------------------------------------------------------------------

ACCEPTED = [(case, accepted) for case in CASES for accepted in case.accepted]
WITH_UNKNOWN_TYPES = [case for case in CASES if case.unknown is not None]
FIXTURE_PAYLOADS = [(case, p.name) for case in CASES for p in sorted((FIXTURES / case.source).glob(case.fixture_glob))]
NOT_DECODABLE = [b"this is neither JSON nor Base64!", b"<xml>nope</xml>", b"{not json", b"", b"\xff\xfe\x00garbage",
                 b"<html></html>"]
NOT_AN_OBJECT = [b"[]", b'[{"event_type": "REPLY_COMMAND_FINISH"}]', b'"REPLY_COMMAND_FINISH"', b"42", b"0", b"-1",
                 b"null", b"true"]

each_case = pytest.mark.parametrize("case", CASES, ids=str)


class WebhookContract:
    """The shared suite; tests/test_webhooks.py collects it (a class not named Test* is not)."""

    # --- 2xx means stored and queued -----------------------------------------------------------

    @pytest.mark.parametrize("case,accepted", ACCEPTED, ids=[f"{c}-{a.fixture}" for c, a in ACCEPTED])
    def test_documented_example_is_acknowledged_recorded_as_sent_and_queued(self, client, app, redis_client, case,
                                                                              accepted):
        body = case.body(accepted.fixture)
        r = case.post(client, body, content_type="application/json")
        assert r.status_code == 200, r.json
        assert set(r.json) == {"code", "message", "event_id"}
        assert (r.json["code"], r.json["message"]) == (0, "OK")
        event_id = r.json["event_id"]
        record = read_event(app.extensions["mediahook"].store.redis, event_id)
        assert record["status"] == "queued"
        assert (record["source"], record["endpoint"], record["type"]) == (case.source, case.endpoint,
                                                                          accepted.event_type)
        assert record["refs"] == accepted.refs
        assert record["body"] == body  # byte for byte, unknown fields and Base64 as they came
        assert record["job_id"] == job_id_for(event_id) == f"event-{event_id}"
        assert f"event-{event_id}" in queued(redis_client)
        assert Job.fetch(f"event-{event_id}", connection=redis_client).get_status() == "queued"

    @pytest.mark.parametrize("case", WITH_UNKNOWN_TYPES, ids=str)
    def test_unknown_event_type_is_acknowledged_as_ignored_and_not_queued(self, client, app, redis_client, case):
        """A type the vendor adds later must not make it retry forever."""
        r = case.post(client, case.body(case.unknown.fixture))
        assert r.status_code == 200, r.json
        assert r.json["ignored"] is True
        record = read_event(app.extensions["mediahook"].store.redis, r.json["event_id"])
        assert (record["status"], record["type"]) == ("ignored", case.unknown.event_type)
        assert "job_id" not in record
        assert queued(redis_client) == []

    @each_case
    def test_redelivery_is_acknowledged_as_a_duplicate_and_queued_once(self, client, redis_client, case):
        """The vendor retrying the same request (same body, same credentials) gets the first answer's id."""
        url, headers = case.credentials(case.path)
        body = case.body(case.accepted[0].fixture)
        first = client.post(url, data=body, headers=headers)
        again = client.post(url, data=body, headers=headers)
        assert first.status_code == again.status_code == 200
        assert "duplicate" not in first.json
        assert again.json.get("duplicate") is True and again.json["event_id"] == first.json["event_id"]
        assert queued(redis_client) == [f"event-{first.json['event_id']}"]

    # --- 401: fail closed, say nothing -----------------------------------------------------------

    @each_case
    @pytest.mark.parametrize("auth", ["none", "wrong"])
    def test_missing_or_wrong_secret_is_401_json_and_nothing_is_stored(self, client, redis_client, case, auth):
        r = case.post(client, case.body(case.accepted[0].fixture), auth=auth)
        assert r.status_code == 401
        assert r.json == UNAUTHORIZED
        assert stored(redis_client) == []

    @each_case
    def test_source_without_config_refuses_even_valid_credentials_with_401(self, base_config, redis_client, case):
        """No secret configured must never mean "no check"."""
        config = copy.deepcopy(base_config)
        del config["sources"][case.source]
        app = create_app(build(config, env={}), start_drainer=False)
        try:
            client = app.test_client()
            for auth in ("valid", "wrong", "none"):
                r = case.post(client, case.body(case.accepted[0].fixture), auth=auth)
                assert (r.status_code, r.json) == (401, UNAUTHORIZED), auth
            assert stored(redis_client) == []
        finally:
            app.extensions["mediahook.traffic"].stop()
            app.extensions["mediahook"].store.redis.close()

    # --- 413, 415, 400 ------------------------------------------------------------------------------

    @each_case
    def test_body_over_max_body_bytes_is_413_json_and_nothing_is_stored(self, make_app, redis_client, case):
        client = make_app(max_body_bytes=LIMIT).test_client()
        r = case.post(client, padded(case.body(case.small), LIMIT + 1))
        assert r.status_code == 413
        check_client(r)
        assert stored(redis_client) == []

    @each_case
    def test_body_exactly_at_max_body_bytes_is_accepted_whole(self, make_app, case):
        client = make_app(max_body_bytes=LIMIT).test_client()
        body = padded(case.body(case.small), LIMIT)
        r = case.post(client, body)
        assert r.status_code == 200, r.json
        assert read_event(client.application.extensions["mediahook"].store.redis, r.json["event_id"])["body"] == body

    @each_case
    @pytest.mark.parametrize("body", NOT_DECODABLE, ids=["text", "xml", "broken-json", "empty", "binary", "html"])
    def test_body_that_does_not_decode_is_415_json(self, client, redis_client, case, body):
        r = case.post(client, body)
        assert r.status_code == 415
        assert check_client(r)["code"] == 415
        assert stored(redis_client) == []

    @each_case
    @pytest.mark.parametrize("body", NOT_AN_OBJECT)
    def test_valid_json_that_is_not_an_object_is_400_naming_the_body(self, client, case, body):
        r = case.post(client, body)
        assert r.status_code == 400, r.json
        assert list(r.json["errors"]) == ["_body"]

    @each_case
    def test_payload_breaking_the_schema_is_400_naming_each_field_path(self, client, redis_client, case):
        r = case.post(client, case.body(case.invalid), content_type="application/json")
        assert r.status_code == 400
        assert check_client(r)["code"] == 400
        assert set(r.json["errors"]) == case.invalid_paths
        assert stored(redis_client) == []

    # --- method, and never a 500 ---------------------------------------------------------------------

    @each_case
    @pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
    def test_other_methods_are_405_json_with_an_allow_header(self, client, case, method):
        url, headers = case.credentials(case.path)
        r = client.open(url, method=method, headers=headers)
        assert r.status_code == 405
        check_client(r)
        assert "POST" in {m.strip() for m in r.headers["Allow"].split(",")}

    @each_case
    def test_odd_bodies_never_get_a_500(self, client, case):
        """Whatever arrives with valid auth, the answer is a client status with a JSON body."""
        rng = random.Random(f"odd-bodies-{case.path}")
        for i, body in enumerate(odd_bodies(rng)):
            r = case.post(client, body, content_type=CONTENT_TYPES[i % len(CONTENT_TYPES)])
            assert r.status_code in CLIENT_STATUSES, (i, body[:80], r.status_code, r.get_data()[:300])
            check_client(r)

    @pytest.mark.parametrize("case,fixture", FIXTURE_PAYLOADS, ids=[f"{c}-{f}" for c, f in FIXTURE_PAYLOADS])
    def test_mutated_fixture_payloads_get_200_or_400_never_500(self, client, case, fixture):
        """Well-formed JSON of every odd type at every place the schemas look: a verdict, not a crash."""
        rng = random.Random(f"mutate-{case.source}/{fixture}")
        payload = json.loads(case.body(fixture))
        for i in range(120):
            body = json.dumps(mutate(payload, rng)).encode()
            if case.registered.accept_base64 and i % 3 == 0:
                body = base64.urlsafe_b64encode(body).rstrip(b"=")
            r = case.post(client, body, content_type="application/json")
            assert r.status_code in (200, 400), (i, body[:300], r.status_code, r.get_data()[:300])
            check_client(r)

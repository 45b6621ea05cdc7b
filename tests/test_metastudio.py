"""MetaStudio live-event callbacks: every auth_type, signature freshness and scope, and the
message-in-a-string validation. What every source does (401, 413, 415, 400, re-delivery, the
documented examples stored and queued, an unknown event type ignored) is tests/webhook_cases.py's."""

from __future__ import annotations

import base64
import copy
import json
import time
from urllib.parse import urlsplit

import pytest
import requests
from rq import Queue

from app import create_app
from app.core.config import build
from app.core.events import read_event
from app.core.queues import EVENTS_QUEUE
from app.sources.metastudio import signature_headers, signed_url
from tests.helpers import LIVE_EVENTS, MS_KEY, MS_TOKEN, fixture_bytes, live_event, signed_path

VENDOR = "metastudio"
URL = "http://localhost" + LIVE_EVENTS  # what the test client's requests look like


def rtmp(**overrides) -> bytes:
    """A valid RTMP_STREAM_STATE_CHANGE body; overrides change message fields."""
    message = dict(room_id="room-1", job_id="job-1", output_url="rtmp://live.example.com/app", stream_key="sk",
                   state="CONNECTED")
    message.update(overrides)
    return live_event("RTMP_STREAM_STATE_CHANGE", **message)


def query_of(url: str) -> str:
    return urlsplit(url).query


def queued_job_ids(redis_client) -> list[str]:
    return Queue(EVENTS_QUEUE, connection=redis_client).job_ids


# --- accepted events ------------------------------------------------------------------------

@pytest.mark.parametrize("sequence_no", ["2", 2])
def test_shoot_script_sequence_no_is_accepted_as_string_or_number(client, sequence_no):
    body = live_event("SHOOT_SCRIPT_SWITCH", room_id="r", job_id="j", scene_script_name="Product 1",
                      shoot_script_sequence_no=sequence_no, shoot_script_title="Paragraph 2")
    r = client.post(signed_path(), data=body)
    assert r.status_code == 200, r.json


# --- auth_type NONE: a token in the URL ----------------------------------------------------

@pytest.fixture
def none_client(make_app):
    return make_app(sources={"metastudio": {"auth_type": "NONE", "token": MS_TOKEN}}).test_client()


def test_none_auth_with_the_right_token_is_accepted(none_client):
    r = none_client.post(f"{LIVE_EVENTS}?token={MS_TOKEN}", data=rtmp())
    assert r.status_code == 200, r.json


@pytest.mark.parametrize("query", ["", "?token=", "?token=wrong-token-value", f"?token={MS_TOKEN}x",
                                   f"?Token={MS_TOKEN}"])
def test_none_auth_with_a_wrong_or_missing_token_is_401(none_client, query):
    r = none_client.post(LIVE_EVENTS + query, data=rtmp())
    assert r.status_code == 401


def test_none_auth_ignores_an_mss_a_signature(none_client):
    """A valid signature is not a token: auth_type decides what is checked."""
    assert none_client.post(signed_path(), data=rtmp()).status_code == 401


# --- auth_type MSS_A: hwSecret/hwTime query parameters ------------------------------------

def test_mss_a_signature_over_a_url_with_its_own_query_is_accepted(client):
    url = signed_url(URL + "?room=r1&tenant=a%20b", MS_KEY)
    r = client.post(f"{LIVE_EVENTS}?{query_of(url)}", data=rtmp())
    assert r.status_code == 200, r.json


def test_mss_a_ignores_signature_headers(client):
    """With MSS_A the signature must be in the query; the same values as headers do not count."""
    assert client.post(LIVE_EVENTS, data=rtmp(), headers=signature_headers(URL, MS_KEY)).status_code == 401


@pytest.mark.parametrize("offset", [-3600, -65, 65, 3600])
def test_mss_a_hwtime_outside_tolerance_is_401(client, offset):
    """Stale (a replay) or from the future, beyond the default 60 s tolerance."""
    assert client.post(signed_path(now=time.time() + offset), data=rtmp()).status_code == 401


@pytest.mark.parametrize("offset", [-50, 50])
def test_mss_a_hwtime_just_inside_tolerance_is_accepted(client, offset):
    """Clock skew either way within tolerance_seconds is fine."""
    r = client.post(signed_path(now=time.time() + offset), data=rtmp())
    assert r.status_code == 200, r.json


def test_mss_a_tolerance_is_configurable(make_app):
    client = make_app(sources={"metastudio": {"tolerance_seconds": 5}}).test_client()
    assert client.post(signed_path(now=time.time() - 30), data=rtmp()).status_code == 401
    assert client.post(signed_path(now=time.time() - 2), data=rtmp()).status_code == 200


def test_mss_a_tampered_secret_is_401(client):
    path = signed_path()
    i = path.index("hwSecret=") + len("hwSecret=")
    flipped = "0" if path[i] != "0" else "1"
    assert client.post(path[:i] + flipped + path[i + 1:], data=rtmp()).status_code == 401


def test_mss_a_signature_for_a_different_path_is_401(client):
    url = signed_url("http://localhost/hooks/metastudio/other-path", MS_KEY)
    assert client.post(f"{LIVE_EVENTS}?{query_of(url)}", data=rtmp()).status_code == 401


@pytest.mark.parametrize("sent_query", ["room=r2", "room=r1&extra=1", ""])
def test_mss_a_signature_for_a_different_query_is_401(client, sent_query):
    """Changing, adding or dropping a signed parameter breaks the signature."""
    signed = query_of(signed_url(URL + "?room=r1", MS_KEY))
    signature = "&".join(p for p in signed.split("&") if p.startswith(("hwSecret=", "hwTime=")))
    path = f"{LIVE_EVENTS}?{sent_query}&{signature}" if sent_query else f"{LIVE_EVENTS}?{signature}"
    assert client.post(path, data=rtmp()).status_code == 401


def test_mss_a_signature_for_a_different_host_is_401(client):
    assert client.post(signed_path(host="evil.example.com"), data=rtmp()).status_code == 401


@pytest.mark.parametrize("hw_time", ["", "zzzz", "1" * 17, "-1"])
def test_mss_a_malformed_hwtime_is_401(client, hw_time):
    path = signed_path()
    head, _, _ = path.partition("&hwTime=")
    assert client.post(f"{head}&hwTime={hw_time}", data=rtmp()).status_code == 401


# --- auth_type MSS_A_HEAD: x-hw-mss-secret / x-hw-mss-time headers ------------------------

@pytest.fixture
def head_client(make_app):
    return make_app(sources={"metastudio": {"auth_type": "MSS_A_HEAD"}}).test_client()


def test_mss_a_head_signed_headers_are_accepted_and_the_secret_header_is_not_stored(head_client):
    r = head_client.post(LIVE_EVENTS, data=rtmp(), headers=signature_headers(URL, MS_KEY))
    assert r.status_code == 200, r.json
    record = read_event(head_client.application.extensions["mediahook"].store.redis, r.json["event_id"])
    assert "x-hw-mss-time" in {k.lower() for k in record["headers"]}
    assert "x-hw-mss-secret" not in {k.lower() for k in record["headers"]}


def test_mss_a_head_ignores_a_query_signature(head_client):
    assert head_client.post(signed_path(), data=rtmp()).status_code == 401


def test_mss_a_head_missing_headers_is_401(head_client):
    assert head_client.post(LIVE_EVENTS, data=rtmp()).status_code == 401


def test_mss_a_head_tampered_secret_is_401(head_client):
    headers = signature_headers(URL, MS_KEY)
    headers["x-hw-mss-secret"] = headers["x-hw-mss-secret"][::-1]
    assert head_client.post(LIVE_EVENTS, data=rtmp(), headers=headers).status_code == 401


@pytest.mark.parametrize("offset", [-120, 120])
def test_mss_a_head_hwtime_outside_tolerance_is_401(head_client, offset):
    headers = signature_headers(URL, MS_KEY, now=time.time() + offset)
    assert head_client.post(LIVE_EVENTS, data=rtmp(), headers=headers).status_code == 401


def test_mss_a_head_signature_for_a_different_query_is_401(head_client):
    headers = signature_headers(URL + "?room=r1", MS_KEY)
    assert head_client.post(LIVE_EVENTS + "?room=r2", data=rtmp(), headers=headers).status_code == 401


# --- public_base_url: behind a proxy, the public URL is what was signed --------------------

PUBLIC = "https://hooks.example.com/prefix"


@pytest.fixture
def public_client(make_app):
    return make_app(public_base_url=PUBLIC).test_client()


def test_public_base_url_signature_over_public_host_and_prefix_is_accepted(public_client):
    url = signed_url(PUBLIC + LIVE_EVENTS, MS_KEY)
    r = public_client.post(f"{LIVE_EVENTS}?{query_of(url)}", data=rtmp())
    assert r.status_code == 200, r.json


@pytest.mark.parametrize("signed_over", [
    "http://localhost" + LIVE_EVENTS,  # the request's own Host
    "https://hooks.example.com" + LIVE_EVENTS,  # public host, prefix left out
    "https://other.example.com/prefix" + LIVE_EVENTS,  # another host
])
def test_public_base_url_signature_over_anything_else_is_401(public_client, signed_over):
    url = signed_url(signed_over, MS_KEY)
    assert public_client.post(f"{LIVE_EVENTS}?{query_of(url)}", data=rtmp()).status_code == 401


def test_public_base_url_applies_to_mss_a_head_too(make_app):
    client = make_app(public_base_url=PUBLIC, sources={"metastudio": {"auth_type": "MSS_A_HEAD"}}).test_client()
    public = signature_headers(PUBLIC + LIVE_EVENTS, MS_KEY)
    assert client.post(LIVE_EVENTS, data=rtmp(), headers=public).status_code == 200
    assert client.post(LIVE_EVENTS, data=rtmp(), headers=signature_headers(URL, MS_KEY)).status_code == 401


# --- fail closed and say nothing ---------------------------------------------------------

@pytest.fixture
def unconfigured_client(base_config):
    """An app whose config has no [sources.metastudio] section at all."""
    config = copy.deepcopy(base_config)
    del config["sources"]["metastudio"]
    settings = build(config, env={})
    assert settings.metastudio_source is None
    app = create_app(settings, start_drainer=False)
    yield app.test_client()
    app.extensions["mediahook"].store.redis.close()


@pytest.mark.parametrize("how", ["head", "token"])
def test_source_without_config_refuses_every_auth_type_with_401(unconfigured_client, redis_client, how):
    """No secret configured must never mean "no check": fail closed (an MSS_A signature and no
    credentials at all: webhook_cases)."""
    kwargs = {
        "head": dict(path=LIVE_EVENTS, headers=signature_headers(URL, MS_KEY)),
        "token": dict(path=f"{LIVE_EVENTS}?token={MS_TOKEN}"),
    }[how]
    r = unconfigured_client.post(kwargs.pop("path"), data=rtmp(), **kwargs)
    assert r.status_code == 401
    assert redis_client.keys("mh:event:*") == []


def test_every_401_has_the_same_body(client, make_app):
    """The answer gives no hint of which part failed (time, signature, key, missing)."""
    none_client = make_app(sources={"metastudio": {"auth_type": "NONE", "token": MS_TOKEN}}).test_client()
    path = signed_path()
    i = path.index("hwSecret=") + len("hwSecret=")
    answers = [
        client.post(LIVE_EVENTS, data=rtmp()),  # nothing
        client.post(signed_path(now=time.time() - 600), data=rtmp()),  # stale
        client.post(signed_path(now=time.time() + 600), data=rtmp()),  # future
        client.post(path[:i] + ("0" if path[i] != "0" else "1") + path[i + 1:], data=rtmp()),  # tampered
        client.post(signed_path(host="evil.example.com"), data=rtmp()),  # other host
        client.post(LIVE_EVENTS, data=b"not even json"),  # bad body too: auth is answered first
        none_client.post(f"{LIVE_EVENTS}?token=wrong-token", data=rtmp()),
        none_client.post(LIVE_EVENTS, data=rtmp()),
    ]
    assert {a.status_code for a in answers} == {401}
    assert len({a.get_data() for a in answers}) == 1
    assert answers[0].json == {"code": 401, "message": "unauthorized"}


# --- validation ----------------------------------------------------------------------------

def post_fixture(client, name: str):
    return client.post(signed_path(), data=fixture_bytes(VENDOR, name), content_type="application/json")


def test_bad_json_inside_message_is_400_naming_message(client):
    r = post_fixture(client, "rtmp_stream_state_change.bad_message_json.json")
    assert r.status_code == 400
    assert list(r.json["errors"]) == ["message"]


def test_message_as_an_object_instead_of_a_string_is_400(client):
    r = post_fixture(client, "rtmp_stream_state_change.message_not_string.json")
    assert r.status_code == 400
    assert list(r.json["errors"]) == ["message"]


def test_bad_state_is_400_naming_message_state(client):
    r = post_fixture(client, "rtmp_stream_state_change.bad_state.json")
    assert r.status_code == 400
    assert list(r.json["errors"]) == ["message.state"]


def test_missing_message_is_400(client):
    r = client.post(signed_path(), data=json.dumps({"event_type": "REPLY_COMMAND_FINISH"}))
    assert r.status_code == 400
    assert list(r.json["errors"]) == ["message"]


def test_missing_event_type_is_400(client):
    r = post_fixture(client, "missing_event_type.json")
    assert r.status_code == 400
    assert list(r.json["errors"]) == ["event_type"]


@pytest.mark.parametrize("event_type", [None, 7, ["SHOOT_SCRIPT_SWITCH"], "", "has space", "X" * 65,
                                        "RTMP_STREAM_STATE_CHANGE\n"])
def test_malformed_event_type_is_400(client, event_type):
    """Not a name: refused rather than recorded as an "unknown" type (a trailing newline included)."""
    body = json.dumps({"event_type": event_type, "message": json.dumps({"room_id": "r", "job_id": "j"})})
    r = client.post(signed_path(), data=body)
    assert r.status_code == 400
    assert list(r.json["errors"]) == ["event_type"]


def test_verbatim_reply_command_finish_doc_example_is_400_saying_where(client):
    """The vendor's own example has an unescaped quote: sent as JSON, it is broken JSON (400,
    with where it broke); sent as anything else, it is not a format we take (415)."""
    r = post_fixture(client, "reply_command_finish.verbatim.txt")
    assert r.status_code == 400
    assert r.json["code"] == 400 and {"line", "column", "position"} <= set(r.json)
    r = client.post(signed_path(), data=fixture_bytes(VENDOR, "reply_command_finish.verbatim.txt"),
                    content_type="text/plain")
    assert r.status_code == 415


def test_base64_body_is_not_accepted_from_metastudio(client):
    """Only CDNetworks sends Base64; for MetaStudio it is just not JSON."""
    body = base64.urlsafe_b64encode(fixture_bytes(VENDOR, "rtmp_stream_state_change.json"))
    r = client.post(signed_path(), data=body)
    assert r.status_code == 415


# --- over real HTTP ------------------------------------------------------------------------

def test_signed_callback_over_real_http_is_accepted(gunicorn_server, redis_client):
    """Through gunicorn the signed host is the Host header (with its port) and the query is
    checked exactly as it arrives on the wire."""
    base = gunicorn_server()
    url = signed_url(base + LIVE_EVENTS + "?room=r1&tenant=a%20b", MS_KEY)
    r = requests.post(url, data=fixture_bytes(VENDOR, "rtmp_stream_state_change.json"), timeout=10)
    assert r.status_code == 200, r.text
    assert f"event-{r.json()['event_id']}" in queued_job_ids(redis_client)
    assert requests.post(base + LIVE_EVENTS + "?" + query_of(url).replace("r1", "r2"), data=rtmp(),
                         timeout=10).status_code == 401

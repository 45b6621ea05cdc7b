"""A body sent as JSON (Content-Type application/json or …+json) that does not parse is 400 and
says where it broke; a body in a format the endpoint does not take stays 415."""

from __future__ import annotations

import json

import pytest

from tests.helpers import CDN_TOKEN, signed_path

UPLOAD = f"/hooks/cdnetworks/vod-upload?token={CDN_TOKEN}"


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/vnd.vendor+json", "APPLICATION/JSON"])
def test_broken_json_sent_as_json_is_400_with_line_and_column(client, redis_client, content_type):
    body = b'{\n  "event_type": "REPLY_COMMAND_FINISH",\n  "message": "x",\n}'
    r = client.post(signed_path(), data=body, headers={"Content-Type": content_type})
    assert r.status_code == 400, r.json
    assert r.json["code"] == 400
    assert (r.json["line"], r.json["column"], r.json["position"]) == (4, 1, body.index(b"}"))
    assert "line 4 column 1" in r.json["message"] and r.json["errors"]["_body"] == [r.json["message"]]
    assert redis_client.keys("mh:event:*") == []


def test_position_counts_the_body_as_sent(client):
    body = b'\n\n   {"a": tru}'
    r = client.post(UPLOAD, data=body, content_type="application/json")
    assert r.status_code == 400
    assert (r.json["line"], r.json["column"], r.json["position"]) == (3, 10, body.index(b"tru"))


@pytest.mark.parametrize("body", [b"", b"{not json", b"\xff\xfe garbage"], ids=["empty", "broken", "not-utf8"])
def test_base64_endpoints_too_when_the_body_says_json(client, body):
    r = client.post(UPLOAD, data=body, content_type="application/json")
    assert r.status_code == 400, r.json
    assert "position" in r.json


def test_base64_sent_as_json_is_still_decoded(client):
    import base64

    body = base64.urlsafe_b64encode(json.dumps({"code": 0, "message": "ok", "data": {}}).encode()).rstrip(b"=")
    r = client.post(UPLOAD, data=body, content_type="application/json")
    assert r.status_code != 415 and r.status_code != 500
    assert "position" not in (r.json or {})


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded", "text/xml"])
def test_a_body_not_sent_as_json_that_is_not_json_stays_415(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post(signed_path(), data=b"<xml>nope</xml>", headers=headers)
    assert r.status_code == 415 and r.json["code"] == 415
    assert "position" not in r.json


def test_admin_api_broken_json_is_400_and_form_is_415(make_app):
    app = make_app(admin={"token": "t" * 32})
    client = app.test_client()
    auth = {"Authorization": "Bearer " + "t" * 32}
    r = client.post("/api/koophone/apply", data=b'{"profile": "low",', headers=auth, content_type="application/json")
    assert r.status_code == 400 and r.json["position"] == len(b'{"profile": "low",')
    r = client.post("/api/koophone/apply", data=b"profile=low", headers=auth,
                    content_type="application/x-www-form-urlencoded")
    assert r.status_code == 415

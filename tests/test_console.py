"""The operator console without a browser (tests/test_console_browser.py drives Chromium): sign-in
and sessions, CSRF, the audit log, refused callbacks with their reasons, callbacks per minute,
body search and pagination, the Failed page's confirmation and unknown outcomes, and the admin
API's figures — against a real Redis."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest

from app.admin import audit
from app.console import auth
from app.core.config import ConfigError, build
from app.core.queues import QUEUES
from app.web import rejections, traffic
from tests.conftest import ROOM, vendor_sections
from tests.helpers import CDN_TOKEN, LIVE_EVENTS, MS_KEY, fixture_bytes, signed_path
from tests.vendor_harness import post_live, stream_event
from workers import actions, streams, transcode

ADMIN = "console-admin-token-0123456789"
ALICE = "alice-console-token-0123456789"
BOB = "bob-console-token-0123456789ab"
TOKENS = {"token": ADMIN, "tokens": {"alice": ALICE, "bob": BOB}}
UPLOAD = f"/hooks/cdnetworks/vod-upload?token={CDN_TOKEN}"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def console_app(make_app):
    return make_app(admin=TOKENS)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(client, token: str = ALICE, next_path: str = "/console/") -> object:
    page = client.get("/console/login")
    return client.post("/console/login", data={"csrf_token": csrf_of(page.get_data(as_text=True)),
                                               "token": token, "next": next_path})


def signed_in(app, token: str = ALICE):
    client = app.test_client()
    assert login(client, token).status_code == 303
    return client


def flush(app) -> None:
    app.extensions["mediahook.traffic"].flush()


# --- sign-in, sessions, CSRF ----------------------------------------------------------------------

def test_a_page_without_a_session_redirects_to_the_login(console_app):
    client = console_app.test_client()
    for path in ("/console/", "/console/events?source=cdnetworks", "/console/failed", "/console/audit"):
        r = client.get(path)
        assert r.status_code == 302, path
        assert r.headers["Location"].startswith("/console/login?next=")
    assert client.get("/console/overview.part").status_code == 401  # a fragment is not redirected
    assert client.get("/console/static/console.js").status_code == 200  # assets need no session


def test_sign_in_with_a_named_token_sets_a_strict_httponly_cookie(console_app):
    client = console_app.test_client()
    r = login(client, ALICE, "/console/events")
    assert r.status_code == 303 and r.headers["Location"] == "/console/events"
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith(auth.COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here: a Secure cookie would never come back
    assert ALICE not in cookie  # the session names who, never the token
    page = client.get("/console/events")
    assert page.status_code == 200 and ">alice<" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def test_the_cookie_is_secure_over_https(console_app):
    client = console_app.test_client()
    page = client.get("/console/login", base_url="https://localhost")
    r = client.post("/console/login", base_url="https://localhost",
                    data={"csrf_token": csrf_of(page.get_data(as_text=True)), "token": ADMIN})
    cookie = next(c for c in r.headers.getlist("Set-Cookie") if c.startswith(auth.COOKIE + "="))
    assert "Secure" in cookie


def test_a_wrong_token_or_a_forged_login_form_is_refused(console_app, caplog):
    client = console_app.test_client()
    caplog.set_level(logging.WARNING)
    r = login(client, "not-a-token-at-all-0123456789")
    assert r.status_code == 401 and "Not a configured admin token" in r.get_data(as_text=True)
    assert "not-a-token-at-all" not in caplog.text
    # A login form posted from elsewhere has no nonce cookie: refused even with the right token.
    other = console_app.test_client()
    r = other.post("/console/login", data={"csrf_token": "forged", "token": ALICE})
    assert r.status_code == 401 and not any(c.startswith(auth.COOKIE + "=") for c in r.headers.getlist("Set-Cookie"))
    assert other.get("/console/").status_code == 302


def test_without_any_admin_token_nobody_signs_in(make_app):
    client = make_app().test_client()
    page = client.get("/console/login").get_data(as_text=True)
    assert "nobody can sign in" in page
    r = client.post("/console/login", data={"csrf_token": csrf_of(page), "token": "anything-0123456789"})
    assert r.status_code == 401 and client.get("/console/").status_code == 302


def test_a_post_without_the_csrf_token_is_refused(console_app, redis_client):
    client = signed_in(console_app)
    event_id = client.post(UPLOAD, data=fixture_bytes("cdnetworks", "vod_upload.json")).json["event_id"]
    for data in ({}, {"csrf_token": "wrong"}):
        r = client.post(f"/console/events/{event_id}/replay", data=data)
        assert r.status_code == 403 and "CSRF" in r.get_data(as_text=True)
        r = client.post("/console/failed/requeue", data={**data, "mode": "all"})
        assert r.status_code == 403
        assert client.post("/console/logout", data=data).status_code == 403
    assert redis_client.hget(f"mh:event:{event_id}", "replays") is None  # nothing was done
    csrf = csrf_of(client.get(f"/console/events/{event_id}").get_data(as_text=True))
    r = client.post(f"/console/events/{event_id}/replay", data={"csrf_token": csrf})
    assert r.status_code == 303 and redis_client.hget(f"mh:event:{event_id}", "replays") == b"1"


def test_logout_ends_the_session(console_app):
    client = signed_in(console_app)
    csrf = csrf_of(client.get("/console/").get_data(as_text=True))
    r = client.post("/console/logout", data={"csrf_token": csrf})
    assert r.status_code == 303 and r.headers["Location"] == "/console/login"
    assert client.get("/console/").status_code == 302


def test_a_session_ends_when_its_token_is_removed(console_app, make_app):
    client = signed_in(console_app, BOB)
    cookie = client.get_cookie(auth.COOKIE, path="/console").value
    same = make_app(admin=TOKENS).test_client()
    same.set_cookie(auth.COOKIE, cookie, path="/console")
    assert same.get("/console/").status_code == 200  # another worker with the same config accepts it
    without_bob = make_app(admin={"token": ADMIN, "tokens": {"alice": ALICE}}).test_client()
    without_bob.set_cookie(auth.COOKIE, cookie, path="/console")
    assert without_bob.get("/console/").status_code == 302


def test_admin_tokens_are_validated():
    base = {"redis": {"url": "redis://127.0.0.1:6379/0"}}
    ok = build({**base, "admin": TOKENS}, env={})
    assert dict(ok.admin_tokens) == {"admin": ADMIN, "alice": ALICE, "bob": BOB}
    assert ALICE not in repr(ok)
    assert dict(build({**base, "admin": {"token": ADMIN}}, env={}).admin_tokens) == {"admin": ADMIN}
    for admin, where in (({"tokens": {"carol": "short"}}, "admin.tokens"),
                         ({"tokens": {"bad name!": ALICE}}, "admin.tokens"),
                         ({"token": ADMIN, "tokens": {"admin": ALICE}}, "admin.tokens"),
                         ({"tokens": {"a": ALICE, "b": ALICE}}, "admin.tokens")):
        with pytest.raises(ConfigError, match=re.escape(where)):
            build({**base, "admin": admin}, env={})


# --- the audit log --------------------------------------------------------------------------------

def test_actions_from_the_console_and_the_api_are_audited_with_who(console_app, redis_client, caplog):
    caplog.set_level(logging.INFO, logger="mediahook.audit")
    client = signed_in(console_app, ALICE)
    event_id = client.post(UPLOAD, data=fixture_bytes("cdnetworks", "vod_upload.json")).json["event_id"]
    csrf = csrf_of(client.get(f"/console/events/{event_id}").get_data(as_text=True))
    client.post(f"/console/events/{event_id}/replay", data={"csrf_token": csrf})
    r = client.post(f"/api/events/{event_id}/replay", headers={"Authorization": f"Bearer {BOB}"})
    assert r.status_code == 202
    entries = audit.recent(redis_client)
    assert [(e["who"], e["action"], e["via"], e["detail"]["event_id"]) for e in entries] == [
        ("bob", "replay", "api", event_id), ("alice", "replay", "console", event_id)]
    assert "audit: alice replay via console" in caplog.text and "audit: bob replay via api" in caplog.text
    page = client.get("/console/audit").get_data(as_text=True)
    assert page.count('class="audit-item"') == 2 and ">bob<" in page
    r = client.get("/api/audit", headers={"Authorization": f"Bearer {ADMIN}"})
    assert [e["who"] for e in r.json["items"]] == ["bob", "alice"]


def test_the_audit_list_is_bounded(redis_client):
    for n in range(audit.AUDIT_MAX + 5):
        audit.record(redis_client, "x", "replay", "api", n=n)
    assert redis_client.llen(audit.AUDIT_KEY) == audit.AUDIT_MAX
    assert audit.recent(redis_client, 1)[0]["detail"]["n"] == audit.AUDIT_MAX + 4


# --- refused callbacks ----------------------------------------------------------------------------

def reasons(app, redis) -> list[str]:
    flush(app)
    return [f"{r['status']} {r['reason']}" for r in rejections.recent(redis)]


def test_refused_callbacks_are_kept_with_their_reason_and_no_secret(console_app, redis_client, caplog):
    caplog.set_level(logging.WARNING, logger="app.web.rejections")
    client = console_app.test_client()
    assert client.post("/hooks/cdnetworks/vod-upload?token=wrong-token-value-42", data=b"{}").status_code == 401
    assert client.post("/hooks/cdnetworks/vod-upload", data=b"{}").status_code == 401
    assert client.post(UPLOAD, data=b"not json").status_code == 415
    assert client.post(UPLOAD, data=b'{"code": 0}').status_code == 400
    assert client.post(UPLOAD, data=b"{" + b" " * 2_000_000 + b"}").status_code == 413
    stale = signed_path(now=time.time() - 3600)
    future = signed_path(now=time.time() + 3600)
    other_host = signed_path(host="hooks.example.com")  # signed for another URL than this one
    wrong_key = signed_path(key="another-key-0123456789abcdef0123")
    body = stream_event(ROOM, "CONNECTED")
    for path in (stale, future, other_host, wrong_key, LIVE_EVENTS):
        assert client.post(path, data=body).status_code == 401, path
    found = reasons(console_app, redis_client)
    assert found == [
        "401 signature missing: auth_type MSS_A expects it in the query (hwSecret, hwTime)",
        "401 signature mismatch: wrong key, or the vendor signed another URL than localhost/hooks/metastudio/"
        "live-events (check public_base_url, and the Host / X-Forwarded-Host the proxy passes)",
        "401 signature mismatch: wrong key, or the vendor signed another URL than localhost/hooks/metastudio/"
        "live-events (check public_base_url, and the Host / X-Forwarded-Host the proxy passes)",
        found[3], found[4],
        "413 body over max_body_bytes",
        "400 invalid payload: data (Missing data for required field.)",
        "415 body is neither JSON nor URL-safe Base64 of JSON",
        "401 token missing from the URL",
        "401 wrong token",
    ]
    assert re.fullmatch(r"401 signed time in the future by (359\d|36\d\d)s, tolerance 60s \(a fast clock\)", found[3])
    assert re.fullmatch(r"401 stale signed time: sent (359\d|36\d\d)s ago, tolerance 60s .*", found[4])
    kept = json.dumps(rejections.recent(redis_client))
    for secret in ("wrong-token-value-42", CDN_TOKEN, MS_KEY, "secret-stream-key", "hwSecret="):
        assert secret not in kept and secret not in caplog.text
    assert all(r["remote_addr"] == "127.0.0.1" and r["path"].startswith("/hooks/")
               for r in rejections.recent(redis_client))
    # Logged once per reason per flush, with the count.
    assert caplog.text.count("signature mismatch") == 1 and "2 x metastudio 401: signature mismatch" in caplog.text
    page = signed_in(console_app).get("/console/rejected").get_data(as_text=True)
    assert page.count('class="rejected-item"') == 10 and "wrong token" in page


def test_the_refused_list_is_bounded_in_count_and_time(console_app, redis_client, monkeypatch):
    monkeypatch.setattr(rejections, "KEEP", 5)
    client = console_app.test_client()
    for _ in range(8):
        client.post("/hooks/cdnetworks/vod-upload?token=nope-nope-nope", data=b"{}")
    flush(console_app)
    assert redis_client.llen(rejections.REJECTED_KEY) == 5
    assert 0 < redis_client.ttl(rejections.REJECTED_KEY) <= rejections.MAX_AGE
    old = {"at": time.time() - rejections.MAX_AGE - 1, "source": "cdnetworks", "path": "/", "status": 401,
           "reason": "old", "remote_addr": ""}
    redis_client.rpush(rejections.REJECTED_KEY, json.dumps(old))
    assert "old" not in [r["reason"] for r in rejections.recent(redis_client)]


def test_counting_never_waits_on_redis(console_app, redis_client, monkeypatch):
    """A callback costs no Redis call of its own: the counts wait in memory for the flush, and
    a flush that fails keeps them for the next one."""
    tally = console_app.extensions["mediahook.traffic"]
    monkeypatch.setattr(tally, "flush_seconds", 3600.0)  # the thread never flushes during this test
    client = console_app.test_client()
    calls = []
    monkeypatch.setattr(tally.redis, "pipeline", lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(
        __import__("redis").ConnectionError("down")))
    assert client.post("/hooks/cdnetworks/vod-upload?token=nope-nope-nope", data=b"{}").status_code == 401
    assert calls == []
    assert tally.flush() is False and len(calls) == 1  # failed: kept
    monkeypatch.undo()
    assert tally.flush() is True
    assert [r["reason"] for r in rejections.recent(redis_client)] == ["wrong token"]


# --- callbacks per minute, overview ---------------------------------------------------------------

def test_callbacks_per_minute_by_source_and_outcome(console_app, redis_client):
    client = console_app.test_client()
    body = fixture_bytes("cdnetworks", "vod_upload.json")
    assert client.post(UPLOAD, data=body).status_code == 200
    assert client.post(UPLOAD, data=body).json.get("duplicate") is True
    client.post("/hooks/cdnetworks/vod-upload?token=nope-nope-nope", data=body)
    post_live(client, stream_event(ROOM, "CONNECTED"))
    flush(console_app)
    minutes = traffic.per_minute(redis_client, 60)
    assert len(minutes) == 60 and minutes[-1]["minute"] == (time.time() // 60) * 60
    total: dict[str, int] = {}
    for m in minutes:
        for key, n in m["counts"].items():
            total[key] = total.get(key, 0) + n
    assert total == {"cdnetworks|accepted": 1, "cdnetworks|duplicate": 1, "cdnetworks|rejected": 1,
                     "metastudio|accepted": 1}
    key = next(k for k in redis_client.scan_iter(traffic.TRAFFIC_PREFIX + "*"))
    assert 0 < redis_client.ttl(key) <= traffic.KEEP_SECONDS
    page = signed_in(console_app).get("/console/").get_data(as_text=True)
    assert 'id="traffic-chart"' in page and "<rect" in page and "cdnetworks · duplicate" in page
    assert "cdnetworks 401: wrong token" in page  # rejected by reason
    r = console_app.test_client().get("/api/overview", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200 and r.json["redis_up"] is True and len(r.json["traffic"]) == 60
    assert r.json["rejected_by_reason"] == {"cdnetworks 401: wrong token": 1}
    assert [q["name"] for q in r.json["queues"]] == list(QUEUES)
    assert r.json["workers"] == [] and r.json["failed"] == 0 and r.json["streams_live"] == 0


# --- events: filters, body search, pagination, detail ---------------------------------------------

def test_events_page_filters_searches_bodies_and_pages(console_app, monkeypatch):
    from app.console import views

    client = signed_in(console_app)
    ids = [post_live(client, stream_event(f"room-{n}", "CONNECTED", job_id=f"job-{n}")) for n in range(7)]
    upload = client.post(UPLOAD, data=fixture_bytes("cdnetworks", "vod_upload.json")).json["event_id"]
    monkeypatch.setattr(views, "PAGE_SIZE", 3)

    def shown(html: str) -> list[str]:
        return re.findall(r'data-id="([0-9a-f]+)"', html)

    first = client.get("/console/events?source=metastudio").get_data(as_text=True)
    assert shown(first) == ids[::-1][:3]
    older = re.search(r'href="([^"]+)" id="older"', first).group(1).replace("&amp;", "&")
    assert shown(client.get(older).get_data(as_text=True)) == ids[::-1][3:6]
    assert shown(client.get("/console/events?room_id=room-4").get_data(as_text=True)) == [ids[4]]
    assert shown(client.get("/console/events?type=VOD_UPLOAD").get_data(as_text=True)) == [upload]
    assert shown(client.get("/console/events?since=2999-01-01T00:00").get_data(as_text=True)) == []
    assert shown(client.get("/console/events?until=2000-01-01T00:00").get_data(as_text=True)) == []
    assert shown(client.get("/console/events?source=cdnetworks&since=2000-01-01T00:00&until=2999-01-01T00:00")
                 .get_data(as_text=True)) == [upload]
    # Body search: text inside the body, not the masked secrets.
    assert shown(client.get("/console/events?q=ROOM-5").get_data(as_text=True)) == [ids[5]]
    assert shown(client.get("/console/events?q=secret-stream-key").get_data(as_text=True)) == []
    # Bounded: it looks at SEARCH_SCAN_LIMIT events and offers to go on.
    monkeypatch.setattr(views, "SEARCH_SCAN_LIMIT", 2)
    page = client.get("/console/events?q=room-0").get_data(as_text=True)
    assert shown(page) == [] and "looked at 2" in page and 'id="older"' in page
    bad = client.get("/console/events?since=yesterday")
    assert bad.status_code == 400 and "since" in bad.get_data(as_text=True)
    # Live tail re-fetches the first page's rows.
    assert shown(client.get("/console/events.part?source=cdnetworks").get_data(as_text=True)) == [upload]


def test_an_event_page_masks_secrets_and_shows_headers(console_app):
    client = signed_in(console_app)
    event_id = post_live(client, stream_event(ROOM, "CONNECTED"))
    page = client.get(f"/console/events/{event_id}").get_data(as_text=True)
    assert "secret-stream-key" not in page and "***" in page
    assert "User-Agent" in page and 'id="replay"' in page
    assert client.get("/console/events/ffffffffffffffff").status_code == 404


# --- failed: confirmation, unknown outcomes -------------------------------------------------------

def failed_action(redis, action_id: str, *, outcome: str | None = None) -> None:
    actions.enqueue(redis, action_id, actions.LIVE_START, event_id=None, policy=None,
                    params={"room_id": ROOM})
    fields = {"status": "failed", "last_error": json.dumps({"vendor": "metastudio", "code": "MSS.0001",
                                                            "message": "boom"})}
    if outcome:
        fields["outcome"] = outcome
    redis.hset(actions.ACTION_PREFIX + action_id, mapping=fields)
    redis.zadd(actions.FAILED_INDEX, {action_id: time.time()})


def test_failed_page_confirms_how_many_and_keeps_unknown_outcomes_apart(console_app, redis_client):
    failed_action(redis_client, "act-one")
    failed_action(redis_client, "act-two")
    failed_action(redis_client, "act-unknown", outcome="unknown")
    client = signed_in(console_app)
    page = client.get("/console/failed").get_data(as_text=True)
    assert page.count('class="failed-item"') == 2 and page.count('class="unknown-item"') == 1
    assert "MSS.0001" in page and "Check at the vendor first" in page
    csrf = csrf_of(page)
    r = client.post("/console/failed/requeue", data={"csrf_token": csrf, "mode": "all"})
    text = r.get_data(as_text=True)
    assert r.status_code == 200 and "Requeue 2 items?" in text and "1 with an unknown outcome" in text
    r = client.post("/console/failed/requeue", data={"csrf_token": csrf, "mode": "selected",
                                                     "ids": ["act-unknown"], "confirm": "1"})
    assert r.status_code == 303 and "Nothing+to+requeue" in r.headers["Location"]
    assert redis_client.hget(actions.ACTION_PREFIX + "act-unknown", "status") == b"failed"
    assert audit.recent(redis_client) == []  # nothing was done, nothing audited


# --- the admin API's figures ----------------------------------------------------------------------

def test_api_lists_streams_videos_and_rejected(console_app, redis_client, drive):
    client = console_app.test_client()
    auth_header = {"Authorization": f"Bearer {ADMIN}"}
    post_live(client, stream_event(ROOM, "CONNECTED", job_id="job-9"))
    drive(lambda: streams.list_streams(redis_client))
    r = client.get("/api/streams", headers=auth_header)
    assert r.status_code == 200 and r.json["streams"][0]["room_id"] == ROOM
    assert r.json["streams"][0]["state"] == "CONNECTED"
    client.post("/hooks/cdnetworks/vod-upload?token=nope-nope-nope", data=b"{}")
    flush(console_app)
    r = client.get("/api/rejected", headers=auth_header)
    assert [i["reason"] for i in r.json["items"]] == ["wrong token"]
    redis_client.hset("mh:transcode:VID1:360", mapping={"state": "failed", "error": "E1: bad", "updated_at": "1"})
    redis_client.sadd("mh:video-rungs:VID1", "360")
    redis_client.hset("mh:transcode:VID2:360", mapping={"state": "success", "progress": "1.0", "updated_at": "2"})
    redis_client.sadd("mh:video-rungs:VID2", "360")
    for rung, rung_state in (("360", "success"), ("720", "transcoding")):
        redis_client.hset(transcode.key("VID3", rung), mapping={"state": rung_state, "progress": "0.5",
                                                                "updated_at": "3"})
        redis_client.sadd(transcode.VIDEO_RUNGS_PREFIX + "VID3", rung)
    r = client.get("/api/transcodes/videos", headers=auth_header)
    assert [(v["video_id"], v["state"]) for v in r.json["videos"]] == [
        ("VID1", "failed"), ("VID3", "running"), ("VID2", "done")]
    assert [g["rung"] for g in r.json["videos"][1]["rungs"]] == ["360", "720"]
    assert r.json["videos"][0]["rungs"][0]["error"] == "E1: bad"
    r = client.get("/api/transcodes/videos", query_string={"state": "done"}, headers=auth_header)
    assert [v["video_id"] for v in r.json["videos"]] == ["VID2"]
    assert client.get("/api/streams").status_code == 401


def test_the_public_nginx_host_does_not_serve_the_console():
    conf = (ROOT / "deploy" / "nginx" / "mediahook.conf").read_text()
    public = conf.split("server_name hooks.example.com;")[2].split("\nserver {")[0]
    assert "location /console" not in public and "location /hooks/" in public
    assert 'return 404' in public.split("location / {")[1]


def test_the_package_ships_the_console_files(tmp_path):
    """What a non-editable install copies (setuptools' build_py, as a wheel build runs it)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py", "-d",
                    str(tmp_path)], cwd=ROOT, check=True, capture_output=True)
    console = ROOT / "app" / "console"
    shipped = {p.relative_to(tmp_path / "app" / "console") for p in (tmp_path / "app" / "console").rglob("*.*")}
    wanted = {p.relative_to(console) for p in [*console.glob("templates/*.html"), *console.glob("static/*")]}
    assert wanted and wanted <= shipped


def test_an_unknown_live_start_is_started_again_only_after_a_confirmation(make_app, redis_client):
    app = make_app(admin=TOKENS, public_base_url="http://localhost", **vendor_sections("http://127.0.0.1:9"))
    actions.enqueue(redis_client, "live-start-x", actions.LIVE_START, event_id=None, policy=None,
                    params={"room_id": ROOM, "output_url": "rtmp://live.example.com/app"})
    redis_client.hset(actions.ACTION_PREFIX + "live-start-x", mapping={"status": "failed", "outcome": "unknown"})
    redis_client.zadd(actions.FAILED_INDEX, {"live-start-x": time.time()})
    client = signed_in(app)
    page = client.get("/console/failed").get_data(as_text=True)
    assert 'class="unknown-item" data-id="live-start-x"' in page and "Start again…" in page
    csrf = csrf_of(page)
    r = client.post("/console/live/starts/live-start-x/start-again", data={"csrf_token": csrf})
    assert r.status_code == 200 and "the room will then have two" in r.get_data(as_text=True)
    assert audit.recent(redis_client) == []  # only the confirmation so far
    r = client.post("/console/live/starts/live-start-x/start-again",
                    data={"csrf_token": csrf, "confirm": "1", "stream_key": "the-new-stream-key"})
    assert r.status_code == 303
    [entry] = audit.recent(redis_client)
    assert (entry["who"], entry["action"], entry["detail"]["replaces"]) == ("alice", "live.start-again", "live-start-x")
    assert "the-new-stream-key" not in json.dumps(entry)
    assert redis_client.hget(actions.ACTION_PREFIX + "live-start-x", "replaced_by") == entry["detail"][
        "action_id"].encode()


def test_mediahook_dev_serves_the_console_with_the_dev_token(redis_server, redis_client, tmp_path):
    from app import create_app
    from app.core.config import load

    settings = load({"MEDIAHOOK_CONFIG": str(ROOT / "deploy" / "mediahook.dev.toml"), "REDIS_URL": redis_server.url,
                     "MEDIAHOOK_SPOOL_DIR": str(tmp_path / "spool")})
    app = create_app(settings, start_drainer=False)
    try:
        client = app.test_client()
        assert client.get("/console").status_code == 308  # the README's address, without the slash
        r = login(client, "dev-only-admin-token-00000000")
        assert r.status_code == 303
        assert client.get("/console/").status_code == 200
    finally:
        app.extensions["mediahook"].store.redis.close()

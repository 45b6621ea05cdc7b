"""The console's Vendors page: each vendor's state, pause (with a reason) and resume, with CSRF,
audited with who did it."""

from __future__ import annotations

import re

from app.admin import audit
from workers import vendor_control

ALICE = "alice-console-token-0123456789"


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _signed_in(app):
    client = app.test_client()
    page = client.get("/console/login")
    r = client.post("/console/login", data={"csrf_token": _csrf(page.get_data(as_text=True)), "token": ALICE,
                                            "next": "/console/vendors"})
    assert r.status_code == 303
    return client


def test_pause_and_resume_from_the_console(make_app, redis_client):
    app = make_app(admin={"tokens": {"alice": ALICE}})
    client = _signed_in(app)
    page = client.get("/console/vendors")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and all(f'id="vendor-{v}"' in html for v in vendor_control.VENDORS)

    r = client.post("/console/vendors/koophone/pause", data={"csrf_token": _csrf(html), "reason": "incident"})
    assert r.status_code == 303
    state = vendor_control.status(redis_client, "koophone")
    assert state["paused"] and state["paused_by"] == "alice" and state["reason"] == "incident"
    html = client.get(r.headers["Location"]).get_data(as_text=True)
    assert "koophone paused" in html and "PAUSED" in html

    assert client.post("/console/vendors/koophone/resume", data={}).status_code == 403  # no CSRF token
    assert vendor_control.status(redis_client, "koophone")["paused"]
    r = client.post("/console/vendors/koophone/resume", data={"csrf_token": _csrf(html)})
    assert r.status_code == 303 and not vendor_control.status(redis_client, "koophone")["paused"]
    assert client.post("/console/vendors/nobody/pause", data={"csrf_token": _csrf(html)}).status_code == 404

    done = [(e["who"], e["action"], e["via"]) for e in audit.recent(redis_client)]
    assert ("alice", "vendor.pause", "console") in done and ("alice", "vendor.resume", "console") in done

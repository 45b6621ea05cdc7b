"""The console's stream page lists the cloud-phone profiles a room's states led to: its
``video_settings.reconcile`` actions (registry kinds, records of the earlier ``koophone.apply``
name too), with the phones each one set."""

from __future__ import annotations

import json
import re

from tests.conftest import ROOM, vendor_sections
from tests.test_console import TOKENS, signed_in
from tests.vendor_harness import post_live, stream_event
from workers import actions


def _applied_rows(html: str) -> list[list[str]]:
    table = re.search(r'<table id="profiles-applied">(.*?)</table>', html, re.S).group(1)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]]


def test_the_stream_page_lists_the_profiles_applied(make_app, sim, drive, redis_client):
    app = make_app(admin=TOKENS, **vendor_sections(sim.url))
    event_id = post_live(app.test_client(), stream_event(ROOM, "CONNECTED"))
    action_id = f"koophone-{event_id}-0-0"
    drive(lambda: (actions.record(redis_client, action_id) or {}).get("status") == "succeeded",
          what="the phones' profile")
    assert actions.record(redis_client, action_id)["kind"] == actions.VIDEO_SETTINGS_RECONCILE.kind
    # A record an earlier version wrote for the same event, under the old kind name.
    old = "koophone-old-record"
    redis_client.hset(actions.ACTION_PREFIX + old, mapping={
        "id": old, "kind": "koophone.apply", "status": "failed", "attempts": 1,
        "params": json.dumps({"profile": "low", "instance_ids": ["phone-9"]})})
    redis_client.sadd(actions.EVENT_ACTIONS_PREFIX + event_id, old)

    page = signed_in(app).get(f"/console/streams/{ROOM}")
    assert page.status_code == 200
    rows = _applied_rows(page.get_data(as_text=True))
    assert sorted(row[:4] for row in rows) == [["CONNECTED", "low", "1", "failed"],
                                               ["CONNECTED", "normal", "2", "succeeded"]]

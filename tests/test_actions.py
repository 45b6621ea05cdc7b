"""End to end: callbacks in, the right vendor calls out (seen in the simulators' own
records), each once in effect."""

from __future__ import annotations

import base64

import requests

from tests.helpers import CDN_TOKEN, fixture_bytes
from workers import ops, transcode

UPLOAD = f"/hooks/cdnetworks/vod-upload?token={CDN_TOKEN}"
VIDEOS = ("9B0F7BA8BCB9D056D4C24ADDBF821D10", "E869FC95F3C7493ED56E8751C4AA7BEE")


def sim_calls(sim, vendor: str, endpoint: str | None = None) -> list[dict]:
    params = {"vendor": vendor, **({"endpoint": endpoint} if endpoint else {})}
    return requests.get(f"{sim.url}/_sim/calls", params=params, timeout=5).json()["calls"]


def sim_tasks(sim) -> list[dict]:
    return requests.get(f"{sim.url}/transcoding/api/get-transcodes", params={"limit": 100}, timeout=5).json()["results"]


def all_transcoded(redis) -> bool:
    states = [s.get("state") for v in VIDEOS for s in transcode.video_transcodes(redis, v).values()]
    return len(states) == 6 and set(states) == {"success"}


def test_upload_callback_transcodes_every_rung_once(vendor_app, sim, drive, redis_client):
    client = vendor_app.test_client()
    r = client.post(UPLOAD, data=fixture_bytes("cdnetworks", "vod_upload.json"))
    assert r.status_code == 200
    drive(lambda: all_transcoded(redis_client), what="all six transcodes to succeed")

    tasks = sim_tasks(sim)
    # Two videos, 768 px high: 360, 480 and 720 each; 1080 is above the source.
    assert sorted((t["origin_url"], t["task_config_temp_id"]) for t in tasks) == sorted(
        (f"https://ovptest.haplat.net/{v}.mp4", tid) for v in VIDEOS for tid in (1, 2, 3))
    for video in VIDEOS:
        for state in transcode.video_transcodes(redis_client, video).values():
            assert state["target_url"].startswith("https://"), state

    shown = ops.event_details(redis_client, r.json["event_id"])
    assert shown["status"] == "processed"
    assert {a["status"] for a in shown["action_states"]} == {"succeeded"}
    assert len(shown["action_states"]) == 6

    # The same videos again (another delivery, the Base64 form, then a replay): no new task.
    client.post(UPLOAD, data=base64.urlsafe_b64encode(fixture_bytes("cdnetworks", "vod_upload.json")))
    ops.replay(redis_client, r.json["event_id"])
    drive(lambda: redis_client.llen("rq:queue:mediahook-events") == 0, what="the repeats to be processed")
    assert len(sim_tasks(sim)) == 6
    assert len(sim_calls(sim, "muducloud", "create-transcode")) == 6

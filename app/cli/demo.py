"""`mediahook demo`: drive a running `mediahook dev` the way the vendors would, and show the outcome.

Posts the documented CDNetworks upload callback and a short MetaStudio live session (stream
CONNECTED, a script switch, a finished reply, stream END), signed as the vendors sign them, then
waits until the transcodes are final and the converter has followed the stream.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from redis import Redis

from app.core.config import Settings
from app.sources import cdnetworks, metastudio
from app.sources.metastudio import signature_headers, signed_url
from workers import ops, timeline

# The documented upload callback, shipped in the package (an installed copy has no tests/ folder;
# tests/test_packaging.py keeps it equal to tests/fixtures/cdnetworks/vod_upload.json).
UPLOAD_EXAMPLE = Path(__file__).resolve().parent / "demo_data" / "vod_upload.json"
ROOM = "26f065244f754b3aa853b649a21aaf66"  # the room in MetaStudio's documented examples


def _live_event(event_type: str, **message: Any) -> bytes:
    return json.dumps({"event_type": event_type, "message": json.dumps(message)}).encode()


def _post_live(settings: Settings, body: bytes) -> str:
    url = settings.public_base_url + metastudio.HOOK_PATH
    src = settings.metastudio_source
    headers = {"Content-Type": "application/json"}
    if src.auth_type == "NONE":
        url += f"?token={src.token}"
    elif src.auth_type == "MSS_A_HEAD":
        headers.update(signature_headers(url, src.key))
    else:
        url = signed_url(url, src.key)
    return _post(url, body, headers)


def _post(url: str, body: bytes, headers: dict[str, str]) -> str:
    r = requests.post(url, data=body, headers=headers, timeout=10)
    r.raise_for_status()
    return r.json()["event_id"]


# How far a wait has got: (done, out of), e.g. (4, 6) rungs final.
Count = tuple[int, int]


def _wait(what: str, count: Callable[[], Count], timeout: float, progress: Callable[[str], None] | None) -> bool:
    """Poll until count() is complete; tell ``progress`` what is awaited, at most once a second."""
    start = time.monotonic()
    shown = 0.0
    while True:
        done, total = count()
        if total and done >= total:
            return True
        waited = time.monotonic() - start
        if waited > timeout:
            return False
        if progress is not None and waited - shown >= 1.0:
            progress(f"waiting for {what}: {done} of {total or '?'} done ({waited:.0f} s)")
            shown = waited
        time.sleep(0.5)


def _actions_done(redis: Redis, event_id: str) -> Count:
    doc = ops.event_details(redis, event_id) or {}
    states = [a["status"] for a in doc.get("action_states", [])]
    if doc.get("status") != "processed":
        return 0, 0  # the actions are not even known yet
    return sum(s in ("succeeded", "failed", "skipped") for s in states), len(states)


def _transcodes_final(redis: Redis, event_id: str) -> Count:
    doc = ops.event_details(redis, event_id) or {}
    rungs = [r for video in (doc.get("transcodes") or {}).values() for r in video.values()]
    return sum(r.get("state") in ("success", "failed", "deleted", "timed_out") for r in rungs), len(rungs)


def run_demo(settings: Settings, redis: Redis, echo: Callable[[str], None], timeout: float = 60.0,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Post the callbacks, wait for their outcome, echo it; returns what came of it (the events
    by label, the live job, and whether everything completed in time)."""
    if settings.metastudio_source is None or settings.cdnetworks_source is None:
        raise ValueError("both [sources.metastudio] and [sources.cdnetworks] must be configured")
    live_job = f"demo-{uuid.uuid4().hex[:8]}"
    common = {"room_id": ROOM, "job_id": live_job}
    upload = _post(f"{settings.public_base_url}{cdnetworks.UPLOAD_HOOK}?token={settings.cdnetworks_source.token}",
                   UPLOAD_EXAMPLE.read_bytes(), {"Content-Type": "application/json"})
    echo(f"upload callback         → event {upload}")
    stream = dict(common, output_url="rtmp://live.example.com/app", stream_key="demo-secret-key")
    connected = _post_live(settings, _live_event("RTMP_STREAM_STATE_CHANGE", **stream, state="CONNECTED"))
    echo(f"stream CONNECTED        → event {connected}")
    switch = _post_live(settings, _live_event("SHOOT_SCRIPT_SWITCH", **common, scene_script_name="Product 1",
                                       shoot_script_sequence_no="2", shoot_script_title="Paragraph 2"))
    echo(f"script switch           → event {switch}")
    reply = _post_live(settings, _live_event("REPLY_COMMAND_FINISH", **common, reply_id=uuid.uuid4().hex))
    echo(f"reply finished          → event {reply}")
    ok = _wait("the CONNECTED event's actions", lambda: _actions_done(redis, connected), timeout, progress)
    end = _post_live(settings, _live_event("RTMP_STREAM_STATE_CHANGE", **stream, state="END"))
    echo(f"stream END              → event {end}")
    ok = _wait("the END event's actions", lambda: _actions_done(redis, end), timeout, progress) and ok
    ok = _wait("the transcodes", lambda: _transcodes_final(redis, upload), timeout, progress) and ok

    echo("\nWhat came of it (mediahook events show ID for the whole story):")
    for label, event_id in (("upload", upload), ("CONNECTED", connected), ("END", end)):
        doc = ops.event_details(redis, event_id) or {}
        for action in doc.get("action_states", []):
            result = action.get("result") or action.get("last_error") or {}
            echo(f"  {label:9} {action['id']:60} {action['status']}")
            if result:  # whole, on a line of its own: never cut in the middle of the JSON
                echo(f"            {json.dumps(result, sort_keys=True, ensure_ascii=False)}")
        for video, rungs in (doc.get("transcodes") or {}).items():
            for rung, state in rungs.items():
                echo(f"  transcode {video} {rung:>8}: {state.get('state')} {state.get('target_url', '')}")
    shown = timeline.show(redis, live_job) or {}
    echo(f"  live job {live_job}: scene {shown.get('scene_script_name')!r}, paragraph "
         f"{shown.get('shoot_script_sequence_no')}, {len(shown.get('finished_replies', []))} finished reply(ies)")
    echo("demo complete" if ok else
         f"demo INCOMPLETE after {timeout:.0f}s: see mediahook events show / mediahook failed")
    return {"complete": ok, "live_job": live_job,
            "events": {"upload": upload, "connected": connected, "switch": switch, "reply": reply, "end": end}}

"""Huawei Cloud MetaStudio: start a smart-live job, then send its live-event callbacks.

The callbacks are what mediahook receives in production, so they are signed with mediahook's
own ``signed_url`` / ``signature_headers`` (MSS_A / MSS_A_HEAD) and sent only to the URL the
job was started with. The event sequence is fixed: stream CONNECTING, CONNECTED, two script
switches, a reply finished, stream END, ``callback_interval_s`` apart.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, jsonify, request

from app.sources.metastudio import EVENT_TYPES, signature_headers, signed_url
from simulators.faults import Vendor
from simulators.state import Sim, get_sim

NAME = "metastudio"
CALLBACKS = "metastudio-callbacks"  # the vendor name under which sent callbacks are recorded
DEFAULTS: dict[str, Any] = {"auth_token": "sim-metastudio-token", "send_callbacks": True,
                            "callback_interval_s": 0.5, "callback_timeout_s": 5.0}
AUTH_TYPES = ("NONE", "MSS_A", "MSS_A_HEAD")
INVALID_PARAMETER = "MSS.00000003"
MAX_CALLBACK_URL, MAX_KEY = 2048, 32
# No proxies: callbacks go exactly to the URL given, whatever the environment says.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def error_body(code: Any, message: str) -> dict[str, Any]:
    return {"error_code": code, "error_msg": message}


VENDOR = Vendor(NAME, ("start-job",), error_body, vendor_error_status=400,
                internal_error=("MSS.00000004", "Internal Error"),
                throttled=("APIGW.0308", "The throttling threshold has been reached"))
blueprint = Blueprint(NAME, __name__, url_prefix="/v1")


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def problem(body: Any) -> str | None:
    """What is wrong with a start-job body, or None (all fields are optional)."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for field in ("output_urls", "stream_keys"):
        if field in body and not _strings(body[field]):
            return f"{field} must be a list of strings"
    video = body.get("video_config")
    if video is not None:
        if not isinstance(video, dict):
            return "video_config must be an object"
        bitrate = video.get("bitrate")
        if not isinstance(video.get("codec"), str) or not isinstance(bitrate, int) or not 40 <= bitrate <= 30000:
            return "video_config needs codec and bitrate (40..30000 kbit/s)"
        if not isinstance(video.get("width"), int) or not isinstance(video.get("height"), int):
            return "video_config needs width and height"
    cb = body.get("live_event_callback_config")
    if cb is None:
        return None
    if not isinstance(cb, dict):
        return "live_event_callback_config must be an object"
    url = cb.get("live_event_type_callback_url")
    if url is not None:
        if not isinstance(url, str) or not 0 < len(url) <= MAX_CALLBACK_URL \
                or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            return f"live_event_type_callback_url must be an http(s) URL of at most {MAX_CALLBACK_URL} characters"
    auth_type = cb.get("auth_type", "NONE")
    if auth_type == "MEITUAN_DEFAULT":
        return "auth_type MEITUAN_DEFAULT is not simulated"
    if auth_type not in AUTH_TYPES:
        return f"auth_type must be one of {', '.join(AUTH_TYPES)}"
    key = cb.get("key")
    if key is not None and (not isinstance(key, str) or len(key) > MAX_KEY):
        return f"key must be a string of at most {MAX_KEY} characters"
    if auth_type != "NONE" and not key:
        return f"auth_type {auth_type} needs a key"
    types = cb.get("callback_event_type")
    if types is not None and (not _strings(types) or any(t not in EVENT_TYPES for t in types)):
        return f"callback_event_type must be a list of {', '.join(EVENT_TYPES)}"
    return None


def _events(room_id: str, job_id: str, body: dict[str, Any], reply_id: str) -> list[tuple[str, dict[str, Any]]]:
    output_url = (body.get("output_urls") or ["rtmp://live.sim/live"])[0]
    stream_key = (body.get("stream_keys") or [""])[0]

    def rtmp(state: str) -> tuple[str, dict[str, Any]]:
        return "RTMP_STREAM_STATE_CHANGE", {"room_id": room_id, "job_id": job_id, "output_url": output_url,
                                            "stream_key": stream_key, "state": state}

    def switch(no: int) -> tuple[str, dict[str, Any]]:
        return "SHOOT_SCRIPT_SWITCH", {"room_id": room_id, "job_id": job_id, "scene_script_name": "Scene 1",
                                       "shoot_script_sequence_no": str(no), "shoot_script_title": f"Paragraph {no}"}

    return [rtmp("CONNECTING"), rtmp("CONNECTED"), switch(1), switch(2),
            ("REPLY_COMMAND_FINISH", {"room_id": room_id, "job_id": job_id, "reply_id": reply_id}), rtmp("END")]


def _send(sim: Sim, url: str, auth_type: str, key: str, event_type: str, message: dict[str, Any]) -> None:
    """POST one live event, signed as MetaStudio signs it, and record what came back."""
    headers = {"Content-Type": "application/json"}
    if auth_type == "MSS_A":
        url = signed_url(url, key)
    elif auth_type == "MSS_A_HEAD":
        headers.update(signature_headers(url, key))
    body = {"event_type": event_type, "message": json.dumps(message)}
    parts = urlsplit(url)
    call = sim.record(CALLBACKS, event_type, method="POST", url=url, path=parts.path, query=parts.query,
                      headers=dict(headers), body=body, answer=None, pending=True)
    started = time.monotonic()
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    answer: dict[str, Any] | None = None
    error = None
    try:
        with _opener.open(req, timeout=sim.config[NAME]["callback_timeout_s"]) as resp:
            answer = {"status": resp.status, "body": resp.read(4096).decode("utf-8", "replace")}
    except urllib.error.HTTPError as exc:
        answer = {"status": exc.code, "body": exc.read(4096).decode("utf-8", "replace")}
    except (OSError, ValueError) as exc:
        error = repr(exc)
    if answer is not None:
        try:
            answer["body"] = json.loads(answer["body"])
        except ValueError:
            pass
    sim.update(call, pending=False, answer=answer, error=error,
               duration_ms=round((time.monotonic() - started) * 1000, 1))


def _run_callbacks(sim: Sim, job: dict[str, Any], events: list[tuple[str, dict[str, Any]]], generation: int) -> None:
    """The job's life as callbacks; stops early on reset or when the server stops."""
    cb = job["body"]["live_event_callback_config"]
    url, auth_type, key = cb["live_event_type_callback_url"], cb.get("auth_type", "NONE"), cb.get("key", "")
    interval = sim.config[NAME]["callback_interval_s"]
    for event_type, message in events:
        if sim.stopping.wait(interval) or sim.generation != generation:
            sim.update(job, callbacks="stopped")
            return
        _send(sim, url, auth_type, key, event_type, message)
        with sim.lock:
            job["callbacks_sent"] += 1
    sim.update(job, callbacks="done")


@blueprint.post("/<project_id>/smart-live-rooms/<room_id>/smart-live-jobs")
@VENDOR.endpoint("start-job")
def start_job(project_id: str, room_id: str):
    sim = get_sim()
    cfg = sim.config[NAME]
    if request.headers.get("X-Auth-Token") != cfg["auth_token"]:
        return jsonify(error_body("MSS.00000001", "Unauthorized")), 401
    body = request.get_json(force=True, silent=True) if request.get_data() else {}
    if (bad := problem(body)) is not None:
        return jsonify(error_body(INVALID_PARAMETER, f"Invalid parameter: {bad}")), 400
    cb = body.get("live_event_callback_config") or {}
    with sim.lock:
        job_id = str(uuid.UUID(int=sim.rng.getrandbits(128), version=4))
        reply_id = uuid.UUID(int=sim.rng.getrandbits(128), version=4).hex
        wanted = cb.get("callback_event_type")
        events = [e for e in _events(room_id, job_id, body, reply_id) if not wanted or e[0] in wanted]
        sending = bool(cb.get("live_event_type_callback_url")) and cfg["send_callbacks"]
        job = {"job_id": job_id, "project_id": project_id, "room_id": room_id, "body": body, "created": time.time(),
               "callbacks": "sending" if sending else ("off" if cb.get("live_event_type_callback_url") else "none"),
               "callbacks_planned": len(events) if sending else 0, "callbacks_sent": 0}
        sim.vendor_data(NAME).setdefault("jobs", {})[job_id] = job
        generation = sim.generation
        request_id = str(uuid.UUID(int=sim.rng.getrandbits(128), version=4))
    if sending:
        threading.Thread(target=_run_callbacks, args=(sim, job, events, generation), daemon=True,
                         name=f"metastudio-callbacks-{job_id[:8]}").start()
    response = jsonify({"job_id": job_id})
    response.status_code = 202
    response.headers["X-Request-Id"] = request_id
    return response


def jobs(sim: Sim) -> list[dict[str, Any]]:
    """Every job started, with its callback progress, for /_sim/ (oldest first)."""
    with sim.lock:
        return [dict(job) for job in sim.vendor_data(NAME).get("jobs", {}).values()]

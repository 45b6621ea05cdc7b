"""Muducloud transcoding service: create / get / list / delete transcode tasks.

Tasks are not worked on by anything: their status and progress are computed from their age
(waiting for ``queue_seconds``, then transcoding for ``transcode_seconds``), so a read is
always consistent and nothing runs in the background. ``errcode`` 1000 is success; error
codes other than 1000 are the simulator's choice (the vendor documents none) and come with
HTTP 200, as the vendor's errcode style suggests.
"""

from __future__ import annotations

import string
import time
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, jsonify, request

from simulators.faults import Vendor
from simulators.state import Sim, get_sim

NAME = "muducloud"
# list_oldest_first: get-transcodes in creation order instead of newest first (the vendor does
# not document its order; clients must cope with both).
DEFAULTS: dict[str, Any] = {"transcode_seconds": 3.0, "queue_seconds": 0.5, "fail_rate": 0.0, "auth_header": None,
                            "list_oldest_first": False}
OK = 1000
INVALID_PARAMETER = 1001
NOT_FOUND = 1004
UNAUTHORIZED = 1401
TRANSCODE_FAILED = 2001
HEIGHTS = {1: "360p", 2: "480p", 3: "720p", 4: "1080p", 5: "original"}
FORMATS = ("m3u8", "mp4", "flv", "ts")
STATUS_WAITING, STATUS_TRANSCODING, STATUS_SUCCESS, STATUS_FAILED, STATUS_DELETED = 0, 1, 2, 3, 4
FAIL_AT = 0.5  # a failing task fails half-way through transcoding
CHINA = timezone(timedelta(hours=8))  # the vendor's examples carry +08:00
ID_ALPHABET = string.ascii_lowercase + string.digits


def error_body(code: Any, message: str) -> dict[str, Any]:
    return {"errcode": code, "msg": message}


VENDOR = Vendor(NAME, ("create-transcode", "get-transcode", "get-transcodes", "delete-transcode", "delete-transcodes"),
                error_body, vendor_error_status=200, internal_error=(1500, "internal error"),
                throttled=(1429, "too many requests"))
blueprint = Blueprint(NAME, __name__, url_prefix="/transcoding/api")


def _error(code: int, message: str, status: int = 200):
    return jsonify(error_body(code, message)), status


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, CHINA).isoformat(timespec="seconds")


def _auth_error(sim: Sim):
    """None when the configured auth header (if any) is present and right."""
    header = sim.config[NAME]["auth_header"]
    if not header:
        return None
    name, _, value = header.partition(":")
    if request.headers.get(name.strip()) != value.strip():
        return _error(UNAUTHORIZED, "unauthorized", 401)
    return None


def _tasks(sim: Sim) -> dict[str, dict[str, Any]]:
    return sim.vendor_data(NAME).setdefault("tasks", {})


def seed_tasks(sim: Sim, count: int, age_s: float, origin_url: str = "https://old.example.com/{n}.mp4") -> None:
    """Fill the account with ``count`` finished tasks created ``age_s`` seconds ago (and before):
    an account's history, for tests and demos of what a lookup costs on a large account."""
    now = time.time()
    with sim.lock:
        tasks = _tasks(sim)
        for n in range(count):
            task_id = "old" + "".join(sim.rng.choice(ID_ALPHABET) for _ in range(10))
            tasks[task_id] = {"id": task_id, "created": now - age_s - n, "origin_url": origin_url.format(n=n),
                              "task_config_temp_id": 1 + n % 5, "format": "m3u8", "fails": False, "deleted": None}


def _view(sim: Sim, task: dict[str, Any], now: float) -> dict[str, Any]:
    """The task as the API shows it at ``now`` (status and progress follow from its age)."""
    cfg = sim.config[NAME]
    started = task["created"] + cfg["queue_seconds"]
    duration = cfg["transcode_seconds"]
    fail_time = started + duration * FAIL_AT
    done_time = started + duration
    status, progress, updated = STATUS_WAITING, 0.0, task["created"]
    error_code, error_info, target_url = 0, "", ""
    if task["fails"] and now >= fail_time:
        status, progress, updated = STATUS_FAILED, FAIL_AT, fail_time
        error_code, error_info = TRANSCODE_FAILED, "simulated failure: the source could not be decoded"
    elif now >= done_time:
        status, progress, updated = STATUS_SUCCESS, 1.0, done_time
        target_url = f"https://cdn.sim/{task['id']}/{HEIGHTS[task['task_config_temp_id']]}.{task['format']}"
    elif now >= started:
        status, progress, updated = STATUS_TRANSCODING, round((now - started) / duration, 4) if duration else 1.0, now
    view = {
        "id": task["id"],
        "created_at": _iso(task["created"]),
        "updated_at": _iso(updated),
        "task_config_temp_id": task["task_config_temp_id"],
        "origin_url": task["origin_url"],
        "target_url": target_url,
        "format": task["format"],
        "status": status,
        "progress": progress,
        "error_code": error_code,
        "error_info": error_info,
    }
    if task.get("deleted"):
        view = {**task["deleted"], "status": STATUS_DELETED}
    return view


def _valid_url(value: Any) -> bool:
    if not isinstance(value, str) or not 0 < len(value) <= 2048:
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https", "rtmp") and bool(parts.netloc)


@blueprint.post("/create-transcode")
@VENDOR.endpoint("create-transcode")
def create_transcode():
    """Validate, then create a task (never idempotent: every create is a new task, as the vendor's)."""
    sim = get_sim()
    if (denied := _auth_error(sim)) is not None:
        return denied
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        return _error(INVALID_PARAMETER, "request body must be a JSON object")
    origin_url = body.get("origin_url")
    if origin_url is None:
        return _error(INVALID_PARAMETER, "origin_url is required")
    if not _valid_url(origin_url):
        return _error(INVALID_PARAMETER, "origin_url must be an http(s) or rtmp URL")
    temp_id = body.get("task_config_temp_id", 5)
    if not isinstance(temp_id, int) or isinstance(temp_id, bool) or temp_id not in HEIGHTS:
        return _error(INVALID_PARAMETER, "task_config_temp_id must be 1..5")
    fmt = body.get("format", "m3u8")
    if fmt not in FORMATS:
        return _error(INVALID_PARAMETER, f"format must be one of {', '.join(FORMATS)}")
    with sim.lock:
        tasks = _tasks(sim)
        task_id = "".join(sim.rng.choice(ID_ALPHABET) for _ in range(8))
        fail_rate = sim.config[NAME]["fail_rate"]
        tasks[task_id] = {"id": task_id, "created": time.time(), "origin_url": origin_url,
                          "task_config_temp_id": temp_id, "format": fmt,
                          "fails": bool(fail_rate) and sim.rng.random() < fail_rate, "deleted": None}
    return jsonify({"id": task_id, "errcode": OK, "msg": "OK"})


@blueprint.get("/get-transcode")
@VENDOR.endpoint("get-transcode")
def get_transcode():
    sim = get_sim()
    if (denied := _auth_error(sim)) is not None:
        return denied
    task_id = request.args.get("id", "")
    with sim.lock:
        task = _tasks(sim).get(task_id)
        if task is None:
            return _error(NOT_FOUND, f"transcoding task {task_id!r} not found" if task_id else "id is required")
        return jsonify({"transcoding": _view(sim, task, time.time()), "errcode": OK, "msg": "OK"})


def _positive_int(name: str, default: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    return int(raw) if raw.isdigit() and int(raw) >= 1 else None


@blueprint.get("/get-transcodes")
@VENDOR.endpoint("get-transcodes")
def get_transcodes():
    """Newest first (the vendor does not say; the simulator's choice, or oldest first with
    ``list_oldest_first``), deleted tasks included."""
    sim = get_sim()
    if (denied := _auth_error(sim)) is not None:
        return denied
    page, limit = _positive_int("page", 1), _positive_int("limit", 15)
    if page is None or limit is None:
        return _error(INVALID_PARAMETER, "page and limit must be whole numbers >= 1")
    now = time.time()
    with sim.lock:
        tasks = sorted(_tasks(sim).values(), key=lambda t: t["created"],
                       reverse=not sim.config[NAME]["list_oldest_first"])
        results = [_view(sim, t, now) for t in tasks[(page - 1) * limit: page * limit]]
        return jsonify({"results": results, "errcode": OK, "msg": "OK", "count": len(tasks)})


def _delete(sim: Sim, task_ids: list[str]):
    """Delete all or none: an unknown id fails the whole call."""
    now = time.time()
    with sim.lock:
        tasks = _tasks(sim)
        missing = [t for t in task_ids if t not in tasks]
        if missing:
            return _error(NOT_FOUND, f"transcoding task(s) not found: {', '.join(missing)}")
        for task_id in task_ids:
            task = tasks[task_id]
            if not task["deleted"]:
                task["deleted"] = _view(sim, task, now)
                task["deleted"]["updated_at"] = _iso(now)
    return jsonify({"errcode": OK, "msg": "OK"})


@blueprint.post("/delete-transcode")
@VENDOR.endpoint("delete-transcode")
def delete_transcode():
    sim = get_sim()
    if (denied := _auth_error(sim)) is not None:
        return denied
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not body["id"]:
        return _error(INVALID_PARAMETER, "id is required")
    return _delete(sim, [body["id"]])


@blueprint.post("/delete-transcodes")
@VENDOR.endpoint("delete-transcodes")
def delete_transcodes():
    sim = get_sim()
    if (denied := _auth_error(sim)) is not None:
        return denied
    body = request.get_json(force=True, silent=True)
    ids = body.get("ids") if isinstance(body, dict) else None
    task_ids = [t.strip() for t in ids.split(",") if t.strip()] if isinstance(ids, str) else []
    if not task_ids:
        return _error(INVALID_PARAMETER, 'ids is required: task ids separated by ","')
    return _delete(sim, task_ids)

"""DJI FlightHub 2 live-stream converter (码流转发器): create, enable/disable, list, delete.

Every call needs the configured ``X-User-Token`` (HTTP 401 otherwise) and an ``X-Request-Id``
that is a UUID. Business errors use the vendor's codes with HTTP 200 and ``code != 0``; the
codes for a bad token (401) and a bad parameter (400) are the simulator's choice.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from flask import Blueprint, jsonify, request

from simulators.faults import Vendor
from simulators.state import Sim, get_sim

NAME = "flighthub"
BASE = "/openapi/v0.1/live-stream/converter"
DEFAULTS: dict[str, Any] = {"user_token": "sim-flighthub-token", "max_converters": 20}
UNAUTHORIZED = 401
INVALID_PARAMETER = 400
ALREADY_EXISTS = 213025
DUPLICATE_PUSH_URL = 213028
NOT_FOUND = 213029
DELETE_NOT_FOUND = 212056
OVER_LIMIT = 233317
SCHEMAS = ("rtmp",)


def error_body(code: Any, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


VENDOR = Vendor(NAME, ("create", "update", "list", "delete"), error_body, vendor_error_status=200,
                internal_error=(500, "internal server error"), throttled=(429, "too many requests"))
blueprint = Blueprint(NAME, __name__, url_prefix=BASE)


def _error(code: int, message: str, status: int = 200):
    return jsonify(error_body(code, message)), status


def _ok(data: dict[str, Any] | None = None):
    body: dict[str, Any] = {"code": 0, "message": "OK"}
    if data is not None:
        body["data"] = data
    return jsonify(body)


def _check_headers(sim: Sim):
    """None when X-User-Token is right and X-Request-Id is a UUID; else the error answer."""
    if request.headers.get("X-User-Token") != sim.config[NAME]["user_token"]:
        return _error(UNAUTHORIZED, "invalid or missing X-User-Token", 401)
    try:
        uuid.UUID(request.headers.get("X-Request-Id", ""))
    except ValueError:
        return _error(INVALID_PARAMETER, "X-Request-Id must be a UUID", 400)
    return None


def _converters(sim: Sim) -> dict[str, dict[str, Any]]:
    return sim.vendor_data(NAME).setdefault("converters", {})


def _state(converter: dict[str, Any]) -> str:
    """The simulator's own state names: no device goes on- or offline here."""
    return "pushing" if converter["auto_push_stream"] else "idle"


def _member(converter: dict[str, Any]) -> dict[str, Any]:
    return {"converter_id": converter["converter_id"], "converter_name": converter["converter_name"],
            "state": _state(converter), "rtmp_url": converter["rtmp_url"],
            "auto_push_stream": converter["auto_push_stream"], "sn": converter["sn"],
            "camera_index": converter["camera_index"]}


def _create_error(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    for field in ("converter_name", "sn", "camera_index", "schema"):
        if not isinstance(body.get(field), str) or not body[field]:
            return f"{field} is required (a non-empty string)"
    if body["schema"].lower() not in SCHEMAS:
        return f"schema must be one of {', '.join(SCHEMAS)}"
    option = body.get("schema_option")
    if not isinstance(option, dict) or not isinstance(option.get("url"), str) \
            or not option["url"].startswith(("rtmp://", "rtmps://")):
        return "schema_option.url is required (an rtmp:// URL)"
    return None


@blueprint.post("")
@blueprint.put("")
@VENDOR.endpoint("create")
def create():
    """Create (POST; the captured page also describes a PUT without converter_id as create)."""
    sim = get_sim()
    if (denied := _check_headers(sim)) is not None:
        return denied
    body = request.get_json(force=True, silent=True)
    if (problem := _create_error(body)) is not None:
        return _error(INVALID_PARAMETER, problem, 400)
    with sim.lock:
        converters = _converters(sim)
        if any(c["converter_name"] == body["converter_name"] for c in converters.values()):
            return _error(ALREADY_EXISTS, "converter already exists")
        if any(c["rtmp_url"] == body["schema_option"]["url"] for c in converters.values()):
            return _error(DUPLICATE_PUSH_URL, "duplicate push URL")
        if len(converters) >= sim.config[NAME]["max_converters"]:
            return _error(OVER_LIMIT, f"over the limit of {sim.config[NAME]['max_converters']} converters")
        converter_id = str(uuid.UUID(int=sim.rng.getrandbits(128), version=4))
        converter = {"converter_id": converter_id, "converter_name": body["converter_name"], "sn": body["sn"],
                     "camera_index": body["camera_index"], "schema": body["schema"],
                     "rtmp_url": body["schema_option"]["url"], "auto_push_stream": False,
                     "project_uuid": request.headers.get("X-Project-Uuid"), "created": time.time(), "history": []}
        converters[converter_id] = converter
        return _ok({"converter_id": converter_id, "converter_state": _state(converter)})


@blueprint.put("/<converter_id>")
@VENDOR.endpoint("update")
def update(converter_id: str):
    """Enable / disable forwarding; every change is kept in the converter's history."""
    sim = get_sim()
    if (denied := _check_headers(sim)) is not None:
        return denied
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("auto_push_stream"), bool):
        return _error(INVALID_PARAMETER, "auto_push_stream is required (true or false)", 400)
    with sim.lock:
        converter = _converters(sim).get(converter_id)
        if converter is None:
            return _error(NOT_FOUND, "converter not found")
        converter["auto_push_stream"] = body["auto_push_stream"]
        converter["history"].append({"auto_push_stream": body["auto_push_stream"], "time": time.time(),
                                     "request_id": request.headers.get("X-Request-Id")})
    return _ok()


@blueprint.get("")
@VENDOR.endpoint("list")
def list_converters():
    sim = get_sim()
    if (denied := _check_headers(sim)) is not None:
        return denied
    with sim.lock:
        members = [_member(c) for c in sorted(_converters(sim).values(), key=lambda c: c["created"])]
    return _ok({"members": members, "total": len(members)})


@blueprint.delete("/<converter_id>")
@VENDOR.endpoint("delete")
def delete(converter_id: str):
    sim = get_sim()
    if (denied := _check_headers(sim)) is not None:
        return denied
    with sim.lock:
        if _converters(sim).pop(converter_id, None) is None:
            return _error(DELETE_NOT_FOUND, "converter not found")
    return _ok()


def inspect(sim: Sim, converter_id: str) -> dict[str, Any] | None:
    """A converter with its full auto_push_stream history, for /_sim/ (the real API has none)."""
    with sim.lock:
        converter = _converters(sim).get(converter_id)
        return None if converter is None else {**_member(converter), "schema": converter["schema"],
                                               "project_uuid": converter["project_uuid"],
                                               "history": list(converter["history"])}

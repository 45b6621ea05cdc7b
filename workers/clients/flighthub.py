"""DJI FlightHub 2 live-stream converter API (码流转发器).

Every call carries ``X-User-Token`` and a fresh ``X-Request-Id`` UUID. Answers are
``{"code": 0, "message": "OK", "data": {...}}``; any other code is an error.
"""

from __future__ import annotations

from typing import Any

from app.core.vendor_config import FlightHub
from workers.clients.http import Reply, VendorError, request_id, send

VENDOR = "flighthub"
SECTION = "flighthub"  # the Settings attribute that configures it
BASE = "/openapi/v0.1/live-stream/converter"
ALREADY_EXISTS = 213025
NOT_FOUND = {213029, 212056}
# Stream-side hiccups (pull/push timeouts, target refused): worth another try later.
TRANSIENT_CODES = {212058, 212061, 212062}


def _headers(cfg: FlightHub) -> dict[str, str]:
    headers = {"X-User-Token": cfg.user_token, "X-Request-Id": request_id(), "X-Language": cfg.language}
    if cfg.project_uuid:
        headers["X-Project-Uuid"] = cfg.project_uuid
    return headers


def _ok(reply: Reply) -> Any:
    body = reply.body if isinstance(reply.body, dict) else {}
    code = body.get("code")
    if reply.status < 400 and code == 0:
        return body.get("data") or {}
    transient = reply.status >= 500 or code in TRANSIENT_CODES
    raise VendorError(VENDOR, str(body.get("message") or f"HTTP {reply.status}"), transient=transient,
                      code=code, reply=reply)


def set_auto_push(cfg: FlightHub, converter_id: str, enabled: bool) -> None:
    _ok(send(VENDOR, cfg.http, "PUT", f"{cfg.base_url}{BASE}/{converter_id}", headers=_headers(cfg),
             json={"auto_push_stream": enabled}))


def create(cfg: FlightHub, converter_name: str, sn: str, camera_index: str, url: str) -> str:
    data = _ok(send(VENDOR, cfg.http, "POST", f"{cfg.base_url}{BASE}", headers=_headers(cfg), json={
        "converter_name": converter_name, "sn": sn, "camera_index": camera_index, "schema": "RTMP",
        "schema_option": {"url": url}}))
    converter_id = data.get("converter_id")
    if not converter_id:
        raise VendorError(VENDOR, "create answered without a converter_id", transient=True)
    return str(converter_id)


def list_converters(cfg: FlightHub) -> list[dict]:
    data = _ok(send(VENDOR, cfg.http, "GET", f"{cfg.base_url}{BASE}", headers=_headers(cfg)))
    return list(data.get("members") or [])


def delete(cfg: FlightHub, converter_id: str) -> None:
    _ok(send(VENDOR, cfg.http, "DELETE", f"{cfg.base_url}{BASE}/{converter_id}", headers=_headers(cfg)))

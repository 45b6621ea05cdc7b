"""Huawei Cloud KooPhone ``PUT /v1/instances/video-setting``, validated as the vendor documents.

The real API has no read-back; the simulator keeps the last settings applied per instance
and shows them at ``GET /_sim/koophone/instances/<id>``.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, jsonify, request

from simulators.faults import Vendor
from simulators.state import Sim, get_sim

NAME = "koophone"
DEFAULTS: dict[str, Any] = {"auth_token": "sim-koophone-token"}
BAD_PARAMETER = "KOOPHONE.API.1000"
NO_PERMISSION = "KOOPHONE.API.1001"
NETWORK_TYPES = ("MOBILE_NETWORK", "WIFI", "WIRED")
ENCODING_TYPES = ("H264", "H265")
DEFINITIONS = ("definition_540P", "definition_720P", "definition_1080P")
MAX_INSTANCES, MAX_INSTANCE_ID = 100, 32


def error_body(code: Any, message: str) -> dict[str, Any]:
    return {"error_code": code, "error_msg": message}


VENDOR = Vendor(NAME, ("video-setting",), error_body, vendor_error_status=400,
                internal_error=("KOOPHONE.API.9999", "internal error"),
                throttled=("APIGW.0308", "The throttling threshold has been reached"))
blueprint = Blueprint(NAME, __name__, url_prefix="/v1/instances")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _spec_problem(where: str, spec: Any) -> str | None:
    if not isinstance(spec, dict):
        return f"{where} is required (an object with code_rate and fps)"
    rate, fps = spec.get("code_rate"), spec.get("fps")
    if not _int(rate) or not 100 <= rate <= 10000 or rate % 100:
        return f"{where}.code_rate must be 100..10000 kbit/s, a multiple of 100"
    if not _int(fps) or fps not in (30, 60):
        return f"{where}.fps must be 30 or 60"
    return None


def problem(body: Any) -> str | None:
    """What is wrong with a request body, or None; the vendor's rules as documented."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    ids = body.get("instance_ids")
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_INSTANCES:
        return f"instance_ids must be a list of 1..{MAX_INSTANCES} instance ids"
    for i, instance_id in enumerate(ids):
        if not isinstance(instance_id, str) or not 1 <= len(instance_id) <= MAX_INSTANCE_ID:
            return f"instance_ids[{i}] must be a string of 1..{MAX_INSTANCE_ID} characters"
    settings = body.get("instance_settings")
    if not isinstance(settings, list) or not settings:
        return "instance_settings is required (a list)"
    seen: set[tuple[str, str]] = set()
    for i, setting in enumerate(settings):
        where = f"instance_settings[{i}]"
        if not isinstance(setting, dict):
            return f"{where} must be an object"
        network, encoding = setting.get("network_type"), setting.get("encoding_type")
        if network not in NETWORK_TYPES:
            return f"{where}.network_type must be one of {', '.join(NETWORK_TYPES)}"
        if encoding not in ENCODING_TYPES:
            return f"{where}.encoding_type must be one of {', '.join(ENCODING_TYPES)}"
        if (network, encoding) in seen:
            return f"{where}: {network}/{encoding} is given twice"
        seen.add((network, encoding))
        groups = setting.get("video_spec_groups")
        if not isinstance(groups, list) or not groups:
            return f"{where}.video_spec_groups is required (a list)"
        for j, group in enumerate(groups):
            if not isinstance(group, dict):
                return f"{where}.video_spec_groups[{j}] must be an object"
            for definition in DEFINITIONS:
                if (bad := _spec_problem(f"{where}.video_spec_groups[{j}].{definition}", group.get(definition))):
                    return bad
    missing = [f"{n}/{e}" for n in NETWORK_TYPES for e in ENCODING_TYPES if (n, e) not in seen]
    if missing:
        return f"instance_settings must cover all 6 network_type x encoding_type combinations; missing {missing}"
    return None


@blueprint.put("/video-setting")
@VENDOR.endpoint("video-setting")
def video_setting():
    sim = get_sim()
    request_id = request.headers.get("x-request-id")
    if request.headers.get("X-Auth-Token") != sim.config[NAME]["auth_token"]:
        response = jsonify(error_body(NO_PERMISSION, "no permission: invalid or missing X-Auth-Token"))
        response.status_code = 401
    elif not request_id:
        response = jsonify(error_body(BAD_PARAMETER, "x-request-id header is required"))
        response.status_code = 400
    elif (bad := problem(body := request.get_json(force=True, silent=True))) is not None:
        response = jsonify(error_body(BAD_PARAMETER, bad))
        response.status_code = 400
    else:
        applied = {"instance_settings": body["instance_settings"], "time": time.time(), "request_id": request_id}
        with sim.lock:
            instances = sim.vendor_data(NAME).setdefault("instances", {})
            for instance_id in body["instance_ids"]:
                instances[instance_id] = applied
        response = jsonify(error_body("0", "ok"))
    if request_id:
        response.headers["X-Request-Id"] = request_id
    return response


def inspect(sim: Sim, instance_id: str) -> dict[str, Any] | None:
    """The last settings applied to an instance (the real API cannot tell)."""
    with sim.lock:
        return sim.vendor_data(NAME).get("instances", {}).get(instance_id)

"""KooPhone cloud-phone video settings: ``PUT /v1/instances/video-setting``.

The API wants all 6 network x encoding combinations on every call and has no read-back.
"""

from __future__ import annotations

from app.core.vendor_config import KooPhone
from workers.clients.http import Reply, VendorError, request_id, send

VENDOR = "koophone"
SECTION = "koophone"  # the Settings attribute that configures it
NETWORK_TYPES = ("MOBILE_NETWORK", "WIFI", "WIRED")
ENCODING_TYPES = ("H264", "H265")
MAX_INSTANCES = 100
TRANSIENT_CODES = {"KOOPHONE.API.9999"}


def expand_profile(profile: dict[str, dict[str, int]]) -> list[dict]:
    """One profile (the three definitions) as the 6 combinations the API requires."""
    return [
        {"network_type": network, "encoding_type": encoding, "video_spec_groups": [{
            name: {"code_rate": spec["code_rate"], "fps": spec["fps"]} for name, spec in profile.items()}]}
        for network in NETWORK_TYPES for encoding in ENCODING_TYPES
    ]


def batches(instance_ids: list[str] | tuple[str, ...]) -> list[list[str]]:
    ids = list(dict.fromkeys(instance_ids))
    return [ids[i:i + MAX_INSTANCES] for i in range(0, len(ids), MAX_INSTANCES)]


def _ok(reply: Reply) -> None:
    body = reply.body if isinstance(reply.body, dict) else {}
    code = str(body.get("error_code", ""))
    if reply.status < 400 and code in ("0", ""):
        return
    transient = reply.status >= 500 or code in TRANSIENT_CODES
    raise VendorError(VENDOR, str(body.get("error_msg") or f"HTTP {reply.status}"), transient=transient,
                      code=code or None, reply=reply)


def apply_video_settings(cfg: KooPhone, instance_ids: list[str], profile: dict[str, dict[str, int]]) -> None:
    if not 1 <= len(instance_ids) <= MAX_INSTANCES:
        raise VendorError(VENDOR, f"1 to {MAX_INSTANCES} instance ids per call", transient=False)
    _ok(send(VENDOR, cfg.http, "PUT", f"{cfg.base_url}/v1/instances/video-setting",
             headers={"x-request-id": request_id(), "X-Auth-Token": cfg.auth_token},
             json={"instance_ids": list(instance_ids), "instance_settings": expand_profile(profile)}))

"""MetaStudio: start a smart-live job whose live-event callbacks come back to us."""

from __future__ import annotations

from typing import Any

from app.core.vendor_config import MetaStudioApi
from workers.clients.http import Reply, VendorError, request_id, send

VENDOR = "metastudio"
SECTION = "metastudio_api"  # the Settings attribute that configures it
TRANSIENT_CODES = {"MSS.00000004"}


def _ok(reply: Reply) -> dict:
    body = reply.body if isinstance(reply.body, dict) else {}
    if reply.status < 400 and "error_code" not in body:
        return body
    code = body.get("error_code")
    transient = reply.status >= 500 or code in TRANSIENT_CODES
    raise VendorError(VENDOR, str(body.get("error_msg") or f"HTTP {reply.status}"), transient=transient,
                      code=code, reply=reply)


def start_job(cfg: MetaStudioApi, room_id: str, body: dict[str, Any]) -> str:
    """POST /v1/{project_id}/smart-live-rooms/{room_id}/smart-live-jobs → the job id."""
    answer = _ok(send(VENDOR, cfg.http, "POST",
                      f"{cfg.base_url}/v1/{cfg.project_id}/smart-live-rooms/{room_id}/smart-live-jobs",
                      headers={"X-Auth-Token": cfg.auth_token, "X-Request-Id": request_id()}, json=body))
    if not answer.get("job_id"):
        # A success answer without the id: a job may well have started, we just cannot tell which.
        raise VendorError(VENDOR, "start-job answered without a job_id", transient=True, maybe_done=True)
    return str(answer["job_id"])

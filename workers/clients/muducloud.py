"""Muducloud transcoding API. ``errcode`` 1000 is success; anything else is an error with ``msg``.

Creating a task is not idempotent: callers record their intent first and look the task up
before creating again (see workers/transcode.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.vendor_settings import Transcoder
from workers.clients.http import Reply, VendorError, send

VENDOR = "muducloud"
OK = 1000
STATUS_NAMES = {-1: "default", 0: "waiting", 1: "transcoding", 2: "success", 3: "failed", 4: "deleted"}
FINAL = {2, 3, 4}


@dataclass(frozen=True)
class Task:
    id: str
    status: int
    progress: float
    origin_url: str | None
    task_config_temp_id: int | None
    target_url: str | None
    error_code: Any
    error_info: str | None

    @property
    def state(self) -> str:
        return STATUS_NAMES.get(self.status, f"unknown({self.status})")


def _headers(cfg: Transcoder) -> dict[str, str]:
    return {cfg.auth_header[0]: cfg.auth_header[1]} if cfg.auth_header else {}


def _ok(reply: Reply) -> dict:
    body = reply.body if isinstance(reply.body, dict) else {}
    if reply.status >= 500:
        raise VendorError(VENDOR, str(body.get("msg") or f"HTTP {reply.status}"), transient=True,
                          code=body.get("errcode"), reply=reply)
    if reply.status >= 400 or body.get("errcode") != OK:
        raise VendorError(VENDOR, str(body.get("msg") or f"HTTP {reply.status}"), transient=False,
                          code=body.get("errcode"), reply=reply)
    return body


def _task(doc: dict) -> Task:
    return Task(id=str(doc["id"]), status=int(doc.get("status", -1)), progress=float(doc.get("progress") or 0.0),
                origin_url=doc.get("origin_url"), task_config_temp_id=doc.get("task_config_temp_id"),
                target_url=doc.get("target_url") or None, error_code=doc.get("error_code"),
                error_info=doc.get("error_info") or None)


def create(cfg: Transcoder, origin_url: str, template_id: int) -> str:
    body = _ok(send(VENDOR, cfg.http, "POST", f"{cfg.base_url}/transcoding/api/create-transcode",
                    headers=_headers(cfg),
                    json={"origin_url": origin_url, "task_config_temp_id": template_id, "format": cfg.format}))
    if not body.get("id"):
        raise VendorError(VENDOR, "create-transcode answered without an id", transient=True)
    return str(body["id"])


def get(cfg: Transcoder, task_id: str) -> Task:
    body = _ok(send(VENDOR, cfg.http, "GET", f"{cfg.base_url}/transcoding/api/get-transcode",
                    headers=_headers(cfg), params={"id": task_id}))
    return _task(body["transcoding"])


def list_page(cfg: Transcoder, page: int = 1, limit: int = 100) -> tuple[list[Task], int]:
    body = _ok(send(VENDOR, cfg.http, "GET", f"{cfg.base_url}/transcoding/api/get-transcodes",
                    headers=_headers(cfg), params={"page": page, "limit": limit}))
    return [_task(d) for d in body.get("results") or []], int(body.get("count") or 0)


def find(cfg: Transcoder, origin_url: str, template_id: int, max_pages: int = 50) -> Task | None:
    """A live (not failed, not deleted) task for this source and definition, if the vendor has one."""
    page, seen = 1, 0
    while page <= max_pages:
        tasks, count = list_page(cfg, page)
        for task in tasks:
            if task.origin_url == origin_url and task.task_config_temp_id == template_id and task.status not in (3, 4):
                return task
        seen += len(tasks)
        if not tasks or seen >= count:
            return None
        page += 1
    return None


def delete(cfg: Transcoder, task_id: str) -> None:
    _ok(send(VENDOR, cfg.http, "POST", f"{cfg.base_url}/transcoding/api/delete-transcode",
             headers=_headers(cfg), json={"id": task_id}))

"""Muducloud transcoding API. ``errcode`` 1000 is success; anything else is an error with ``msg``.

Creating a task is not idempotent: callers record their intent first and, only when a
create's outcome is unknown, look the task up (``find_since``) before creating again (see
workers/transcode.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.core.vendor_config import Transcoder
from workers.clients.http import Reply, VendorError, send

VENDOR = "muducloud"
SECTION = "transcoder"  # the Settings attribute that configures it
OK = 1000
STATUS_NAMES = {-1: "default", 0: "waiting", 1: "transcoding", 2: "success", 3: "failed", 4: "deleted"}
FINAL = {2, 3, 4}
LIVE = {-1, 0, 1}  # default, waiting, transcoding: the vendor is still working on it
SUCCESS, FAILED, DELETED = 2, 3, 4
NOT_FOUND = 1004
PAGE_SIZE = 100
MAX_PAGES = 50  # a safety bound: a lookup never reads more than this many pages


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
    created_at: float | None = None

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
                error_info=doc.get("error_info") or None, created_at=_time(doc.get("created_at")))


def _time(value: Any) -> float | None:
    """Unix time of the vendor's ISO 8601 time (it carries its own offset, e.g. +08:00)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def create(cfg: Transcoder, origin_url: str, template_id: int) -> str:
    body = _ok(send(VENDOR, cfg.http, "POST", f"{cfg.base_url}/transcoding/api/create-transcode",
                    headers=_headers(cfg),
                    json={"origin_url": origin_url, "task_config_temp_id": template_id, "format": cfg.format}))
    if not body.get("id"):
        # It answered "OK" all the same: a task may exist.
        raise VendorError(VENDOR, "create-transcode answered without an id", transient=True, maybe_done=True)
    return str(body["id"])


def get(cfg: Transcoder, task_id: str) -> Task:
    body = _ok(send(VENDOR, cfg.http, "GET", f"{cfg.base_url}/transcoding/api/get-transcode",
                    headers=_headers(cfg), params={"id": task_id}))
    return _task(body["transcoding"])


def list_page(cfg: Transcoder, page: int = 1, limit: int = 100) -> tuple[list[Task], int]:
    body = _ok(send(VENDOR, cfg.http, "GET", f"{cfg.base_url}/transcoding/api/get-transcodes",
                    headers=_headers(cfg), params={"page": page, "limit": limit}))
    return [_task(d) for d in body.get("results") or []], int(body.get("count") or 0)


def find_since(cfg: Transcoder, origin_url: str, template_id: int, since: float) -> list[Task]:
    """Tasks for this source and definition created at ``since`` or later, newest first.

    Reads the vendor's list from its newest end back to ``since`` only, so its cost follows
    the tasks created since then, not the account's size. The vendor does not document the
    list's order: the first page tells (newest first, as the simulator answers, or oldest
    first, then read from the last page back). A list without creation times is read whole,
    up to MAX_PAGES."""
    first, count = list_page(cfg, 1, PAGE_SIZE)
    times = [t.created_at for t in first if t.created_at is not None]
    oldest_first = len(times) >= 2 and times[0] < times[-1]
    pages = max(1, math.ceil(count / PAGE_SIZE))
    order = range(pages, 0, -1) if oldest_first else range(1, pages + 1)
    found: list[Task] = []
    for n, page in enumerate(order):
        if n >= MAX_PAGES:
            break
        tasks = first if page == 1 else list_page(cfg, page, PAGE_SIZE)[0]
        found += [t for t in tasks if t.origin_url == origin_url and t.task_config_temp_id == template_id
                  and (t.created_at is None or t.created_at >= since)]
        stamped = [t.created_at for t in tasks if t.created_at is not None]
        if not tasks or (stamped and min(stamped) < since):
            break  # past the bound: everything further is older
    return sorted(found, key=lambda t: t.created_at or 0.0, reverse=True)


def delete(cfg: Transcoder, task_id: str) -> None:
    _ok(send(VENDOR, cfg.http, "POST", f"{cfg.base_url}/transcoding/api/delete-transcode",
             headers=_headers(cfg), json={"id": task_id}))

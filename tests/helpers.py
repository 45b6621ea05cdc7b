"""Shared test helpers: fixtures on disk, signing, waiting on conditions, config files."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.sources import cdnetworks, metastudio
from app.sources.metastudio import signed_url

FIXTURES = Path(__file__).parent / "fixtures"
MS_KEY = "test-metastudio-key-0123456789ab"
MS_TOKEN = "test-metastudio-token"
CDN_TOKEN = "test-cdnetworks-token"
LIVE_EVENTS = metastudio.HOOK_PATH
VOD_UPLOAD = cdnetworks.UPLOAD_HOOK
VOD_TRANSCODE = cdnetworks.TRANSCODE_HOOK


def fixture_bytes(vendor: str, name: str) -> bytes:
    return (FIXTURES / vendor / name).read_bytes()


def fixture_json(vendor: str, name: str) -> Any:
    return json.loads(fixture_bytes(vendor, name))


def live_event(event_type: str, **message: Any) -> bytes:
    """A MetaStudio live-event body: the message as JSON inside a string, as the vendor sends it."""
    return json.dumps({"event_type": event_type, "message": json.dumps(message)}).encode()


def signed_path(path: str = LIVE_EVENTS, key: str = MS_KEY, now: float | None = None, host: str = "localhost") -> str:
    """A path+query signed (MSS_A) for a request whose Host is ``host`` (Flask's test client: localhost)."""
    url = signed_url(f"http://{host}{path}", key, now)
    return url[len(f"http://{host}"):]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def to_toml(doc: dict, prefix: str = "") -> str:
    """Just enough TOML writing for test configs (tables, strings, numbers, bools, lists)."""
    scalars, tables = [], []
    for key, value in doc.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            scalars.append(f"{key} = {json.dumps(value)}")
    out = "\n".join(scalars) + "\n"
    for key, value in tables:
        name = f"{prefix}.{key}" if prefix else key
        out += f"\n[{name}]\n" + to_toml(value, name)
    return out

"""What the docs and shipped files say is what the service does: no /rq is advertised (nothing
serves it), and the spool's "drain paused" line names its cause, as the runbook tells people
to look for."""

from __future__ import annotations

import logging
from pathlib import Path

from app.web import spool
from tests.helpers import free_port, signed_path

ROOT = Path(__file__).resolve().parent.parent
ADMIN = {"Authorization": "Bearer " + "a" * 32}


def test_nothing_advertises_rq_and_nothing_serves_it(make_app):
    for name in ("deploy/mediahook.example.toml", "deploy/nginx/mediahook.conf", "app/core/config.py",
                 "docs/operations.md", "README.md"):
        text = (ROOT / name).read_text()
        assert "/rq" not in text.replace("/rq info", ""), name
    client = make_app(admin={"token": "a" * 32}).test_client()
    assert client.get("/rq", headers=ADMIN).status_code in (401, 404)
    assert client.get("/rq/", headers=ADMIN).status_code in (401, 404)


def test_the_spool_drain_line_names_the_cause(make_app, caplog):
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there: connection refused
    app = make_app(redis={"url": down, "connect_timeout": 0.2, "socket_timeout": 0.5})
    body = (ROOT / "tests/fixtures/metastudio/rtmp_stream_state_change.json").read_bytes()
    assert app.test_client().post(signed_path(), data=body).status_code == 200  # spooled
    runtime = app.extensions["mediahook"]
    with caplog.at_level(logging.INFO, logger="app.web.spool"):
        assert spool.drain_once(runtime.settings.spool_dir, runtime.store) == 0
    [line] = [r.getMessage() for r in caplog.records if "spool drain paused" in r.getMessage()]
    assert "Connection refused" in line or "Error 111" in line, line

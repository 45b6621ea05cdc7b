"""One log line per action outcome, at its level, from a real `mediahook worker`: a vendor's
permanent refusal is one ERROR line (no second ERROR with a traceback from RQ), a success one
INFO line, and RQ's own per-job INFO lines are quieted. `mediahook dev` logs text for people;
a deployment's default stays JSON."""

from __future__ import annotations

import json
from pathlib import Path

from app.core import config as settings_mod
from tests.conftest import ROOM, vendor_sections
from tests.helpers import wait_until
from workers import actions, live, ops

ROOT = Path(__file__).resolve().parent.parent


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_a_permanent_refusal_is_one_error_line_and_a_success_one_info_line(redis_client, sim, settings_factory,
                                                                            start_worker):
    sections = vendor_sections(sim.url)
    sections["koophone"]["auth_token"] = "wrong-token"  # KooPhone answers 401: permanent
    public = {"public_base_url": "http://127.0.0.1:9"}
    settings = settings_factory(**public, **sections)
    worker = start_worker({**public, **sections})
    [refused] = ops.koophone_apply(redis_client, settings, "low", ["phone-1"])
    started = live.queue_start(redis_client, settings, ROOM, "rtmp://live.example.com/app", "a-stream-key")

    def status(action_id: str) -> str | None:
        return (actions.record(redis_client, action_id) or {}).get("status")

    wait_until(lambda: status(refused) == "failed" and status(started) == "succeeded", timeout=30,
               what="the refused apply and the live start")
    worker.stop()
    lines = _lines(worker.log)

    about_refused = [d for d in lines if d.get("action_id") == refused or d.get("job_id") == actions.job_id(refused)]
    assert [(d["level"], d["logger"]) for d in about_refused] == [("ERROR", "workers.actions")], about_refused
    assert "FAILED" in about_refused[0]["message"] and "exc" not in about_refused[0]
    about_started = [d for d in lines if d.get("action_id") == started]
    assert [(d["level"], d["message"]) for d in about_started] == [("INFO", f"action {started} succeeded")]
    assert not [d for d in lines if d["logger"].startswith("rq") and d["level"] in ("INFO", "DEBUG")]
    assert "Traceback" not in worker.log.read_text()


def test_dev_logs_text_and_a_deployment_json():
    dev = settings_mod.load({"MEDIAHOOK_CONFIG": str(ROOT / "deploy" / "mediahook.dev.toml"),
                             "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert dev.log_format == "text"
    example = (ROOT / "deploy" / "mediahook.example.toml").read_text()
    assert '# format = "json"' in example  # the example leaves the default: JSON
    assert settings_mod.Settings.__dataclass_fields__["log_format"].default == "json"

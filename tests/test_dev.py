"""The README's run command: `mediahook dev` on a machine with no Redis serves /readyz as ready,
turns a signed MetaStudio callback into a processed job, and keeps its data across a restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.helpers import fixture_bytes, free_port, wait_until


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAHOOK_", "REDIS_URL"))}


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=60)


def _start(cwd: Path, port: int) -> subprocess.Popen:
    # --sim-port 0: the simulators on a free port, the vendors pointed at them (never 8900 in a test).
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "dev", "--port", str(port), "--sim-port", "0"],
                            cwd=cwd, env=_env(), stdout=open(cwd / "dev.log", "ab"), stderr=subprocess.STDOUT)

    def ready() -> bool:
        assert proc.poll() is None, (cwd / "dev.log").read_text()
        try:
            return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # a worker still booting
            return False

    wait_until(ready, timeout=30, interval=0.1, what="mediahook dev to be ready")
    return proc


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    return proc.wait(30)


def _status(cwd: Path, event_id: str) -> str | None:
    shown = _cli(cwd, "events", "show", event_id, "--json")
    return json.loads(shown.stdout)["status"] if shown.returncode == 0 else None


@pytest.mark.slow
def test_mediahook_dev_end_to_end(tmp_path):
    port = free_port()
    proc = _start(tmp_path, port)
    try:
        ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()
        assert ready == {"status": "ready", "redis": "ok", "spool_depth": 0}

        signed = _cli(tmp_path, "sign", f"http://127.0.0.1:{port}/hooks/metastudio/live-events")
        assert signed.returncode == 0, signed.stderr
        body = fixture_bytes("metastudio", "rtmp_stream_state_change.json")
        r = requests.post(signed.stdout.strip(), data=body, timeout=5)
        assert r.status_code == 200, r.text
        event_id = r.json()["event_id"]
        wait_until(lambda: _status(tmp_path, event_id) == "processed", timeout=30, interval=0.3,
                   what="the worker to process the event")
        shown = _cli(tmp_path, "events", "show", event_id).stdout
        assert '"stream_key\\":\\"***\\"' in shown and "xxxxx" not in shown  # the secret is masked

        # The README's demo: the upload callback and a live session, through the simulators.
        demo = subprocess.run([sys.executable, "-m", "app.cli", "demo", "--timeout", "60"], cwd=tmp_path, env=_env(),
                              capture_output=True, text=True, timeout=120)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert demo.stdout.count(": success https://") == 6  # two videos x three rungs, polled to success
        assert '"auto_push_stream": true' in demo.stdout and '"auto_push_stream": false' in demo.stdout
        assert "failed" not in demo.stdout
        results = [line.strip() for line in demo.stdout.splitlines() if line.startswith(" " * 12 + "{")]
        assert results and all(json.loads(r) for r in results)  # whole JSON, never cut

        # What an operator reaches first: /metrics, /api/events and /openapi.json served by `mediahook dev`.
        base = f"http://127.0.0.1:{port}"
        metrics = requests.get(base + "/metrics", timeout=5)
        assert metrics.status_code == 200 and "mediahook_callbacks_total" in metrics.text
        assert requests.get(base + "/openapi.json", timeout=5).json()["openapi"].startswith("3.")
        assert requests.get(base + "/api/events", timeout=5).status_code == 401
        events = requests.get(base + "/api/events", timeout=5,
                              headers={"Authorization": "Bearer dev-only-admin-token-00000000"}).json()
        assert event_id in {e["id"] for e in events["events"]}
        # The CLI reads the same things through the same functions.
        assert _cli(tmp_path, "failed").stdout.strip() == "nothing failed"
        rungs = json.loads(_cli(tmp_path, "transcodes", "9B0F7BA8BCB9D056D4C24ADDBF821D10", "--json").stdout)["rungs"]
        assert [(r["rung"], r["status"]) for r in rungs] == [("360", "success"), ("480", "success"), ("720", "success")]
    finally:
        assert _stop(proc) == 0
    assert (tmp_path / "var" / "redis" / "appendonly.aof").exists()
    # The vendors were pointed at the simulators' free port, and the logs are text for people.
    derived = (tmp_path / "var" / "mediahook.dev-sims.toml").read_text()
    assert '"http://127.0.0.1:8900"' not in derived and derived.count('base_url = "http://127.0.0.1:') == 4
    log = (tmp_path / "dev.log").read_text()
    assert " INFO web " in log and " INFO worker workers.actions: action " in log
    assert not [line for line in log.splitlines() if line.startswith('{"ts"')]

    # A restart keeps what Redis held (AOF under ./var/redis).
    proc = _start(tmp_path, port)
    try:
        assert _status(tmp_path, event_id) == "processed"
    finally:
        _stop(proc)

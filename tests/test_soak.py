"""The soak runner (bench/soak.py), run tiny as a user would: its own redis-server, simulators,
gunicorn and workers, one Redis kill, one worker kill, 30 % vendor faults.

The first test holds the runner to its contract (every figure printed, exit code matching the
figures). The second asserts the goal: all correctness figures zero.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.core.config import build
from bench import soak_check as check
from bench.soak import CORRECTNESS
from bench.soak_plan import Expected, expected_final, expected_scripts, make_plan
from bench.soak_stack import PROFILES, config_doc
from workers.clients.koophone import expand_profile

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--callbacks", "60", "--rooms", "3", "--rate", "20", "--redis-kills", "1", "--redis-down", "2",
        "--worker-kills", "1", "--fault-rate", "0.3", "--drain-timeout", "120", "--seed", "7"]
FIGURE = re.compile(r"^([a-z ]+): (\d+)\b", re.MULTILINE)


def test_expected_state_follows_the_current_job_by_signed_time(tmp_path):
    """The rule the soak judges by: the room's current job is the one of its latest signed
    state; the converter follows the last of that job's states that implies something, each
    phone the last state its binding maps; an older job's END delivered late changes nothing."""
    doc = config_doc(tmp_path, "redis://127.0.0.1:1/0", "http://127.0.0.1:1", "http://127.0.0.1:2", ["r0", "r1"], "t")
    settings = build(doc, env={})
    acked = [("r0", "j1", "CONNECTED", 100), ("r0", "j2", "CONNECTING", 110), ("r0", "j2", "CONNECTED", 111),
             ("r0", "j2", "RECONNECTING", 112), ("r0", "j1", "END", 105),  # j1's END, delivered late
             ("r1", "k1", "CONNECTED", 200), ("r1", "k1", "DISCONNECTED", 201)]
    want = expected_final(settings, acked)
    assert (want["r0"].job, want["r0"].converter_on, want["r0"].profiles) == ("j2", True, {0: "low"})
    assert (want["r1"].job, want["r1"].converter_on, want["r1"].profiles) == ("k1", False, {1: "normal"})
    assert expected_scripts([("j", 1, 5), ("j", 2, 6), ("j", 1, 7)]) == {"j": 1}


def test_plan_mixes_what_the_soak_promises():
    plan = make_plan(1000, ["a", "b", "c"], "t", 1, live_starts=6)
    kinds = {k: sum(1 for c in plan if c.kind == k) for k in ("state", "script", "upload", "redelivery", "live")}
    assert kinds["live"] == 6 and 30 <= kinds["redelivery"] <= 70 and kinds["upload"] > 80 and kinds["script"] > 30
    assert any(c.late for c in plan)
    videos = [v["videoId"] for c in plan if c.kind == "upload" for v in c.videos]
    assert len(set(videos)) < len(videos)  # videos come again
    for room in ("a", "b", "c"):
        states = [c.state for c in plan if c.kind == "state" and c.room == room]
        assert "RECONNECTING" in states or "DISCONNECTED" in states
        assert states[-1] != "CONNECTING"


def test_checks_see_wrong_states_and_duplicates_at_the_simulators(sim, tmp_path):
    """The figures come from the vendors' side: a converter left on, a phone on the wrong
    profile, a second live task for a rung, a second live job for one start are all counted."""
    settings = build(config_doc(tmp_path, "redis://127.0.0.1:1/0", sim.url, "http://127.0.0.1:2", ["r0", "r1"], "t"),
                     env={})
    fh = {"X-User-Token": "sim-flighthub-token", "X-Request-Id": "00000000-0000-4000-8000-000000000001"}
    for i in (0, 1):
        r = requests.post(f"{sim.url}/openapi/v0.1/live-stream/converter", headers=fh, timeout=5, json={
            "converter_name": f"t-conv-{i}", "sn": "SN", "camera_index": "39-0-7", "schema": "rtmp",
            "schema_option": {"url": f"rtmp://127.0.0.1/drone/t-{i}"}})
        if i == 0:
            requests.put(f"{sim.url}/openapi/v0.1/live-stream/converter/{r.json()['data']['converter_id']}",
                         headers=fh, json={"auto_push_stream": True}, timeout=5)
    requests.put(f"{sim.url}/v1/instances/video-setting", timeout=5,
                 headers={"X-Auth-Token": "sim-koophone-token", "x-request-id": "x"},
                 json={"instance_ids": ["t-r0-p0", "t-r0-p1"], "instance_settings": expand_profile(PROFILES["low"])})
    expected = {"r0": Expected("r0", "j", False, {0: "low"}), "r1": Expected("r1", "k", True, {1: "normal"})}
    assert check.wrong_converters(sim.url, settings, expected)[:2] == (2, 2)  # r0 on (want off), r1 off (want on)
    assert check.wrong_phones(sim.url, settings, expected)[:2] == (2, 4)  # r1's phones have nothing applied

    origin = "https://vod.example.com/v1.mp4"
    for _ in range(2):
        requests.post(f"{sim.url}/transcoding/api/create-transcode", timeout=5,
                      json={"origin_url": origin, "task_config_temp_id": 2, "format": "m3u8"})
    ms = {"X-Auth-Token": "sim-metastudio-token"}
    for _ in range(2):
        requests.post(f"{sim.url}/v1/p/smart-live-rooms/r9/smart-live-jobs", headers=ms, timeout=5,
                      json={"output_urls": ["rtmp://127.0.0.1/live/one"], "stream_keys": ["k"]})
    dups = check.duplicates(sim.url, settings, {origin: "v1"}, ["t-conv-0", "t-conv-1"],
                            ["rtmp://127.0.0.1/live/one", "rtmp://127.0.0.1/live/two"])
    assert (dups["transcode tasks"], dups["converters"], dups["live jobs"]) == (1, 0, 1)
    assert dups["live starts without a job"] == 1


@pytest.fixture(scope="module")
def tiny_run() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.soak", *TINY], cwd=ROOT, capture_output=True, text=True,
                          timeout=240)


def figures(stdout: str) -> dict[str, int]:
    return {name: int(value) for name, value in FIGURE.findall(stdout)}


@pytest.mark.slow
def test_tiny_soak_prints_every_figure_and_exits_by_them(tiny_run):
    proc = tiny_run
    found = figures(proc.stdout)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert set(CORRECTNESS) <= set(found), proc.stdout + proc.stderr[-3000:]
    assert "acknowledged" in found and re.search(r"^drain time: [\d.]+ s", proc.stdout, re.MULTILINE), proc.stdout
    assert re.search(r"^rule: .*latest signed time", proc.stdout, re.MULTILINE)
    assert found["acknowledged"] > 0
    assert proc.returncode == (1 if any(found[k] for k in CORRECTNESS) else 0), proc.stdout


@pytest.mark.slow
def test_tiny_soak_is_correct(tiny_run):
    """The goal of the worker side: nothing lost, nothing done twice, everything in its final
    state. The drain budget (120 s) is well above the 60 s in which a killed worker's job
    is resumed, so "not drained" means work was left behind, not that the box was slow."""
    proc = tiny_run
    found = figures(proc.stdout)
    assert {k: found.get(k) for k in CORRECTNESS} == dict.fromkeys(CORRECTNESS, 0), proc.stdout
    assert proc.returncode == 0

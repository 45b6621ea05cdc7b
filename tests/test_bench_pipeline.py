"""The pipeline benchmark (bench/pipeline.py), run tiny as a user would: its own redis-server,
simulators, gunicorn and `mediahook worker`, here on the upload path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from app.core.vendor_config import TranscoderSchema
from app.sources.cdnetworks import parse_upload
from bench.pipeline import upload_body
from workers.transcode import rungs_for

ROOT = Path(__file__).resolve().parent.parent


def test_upload_bodies_are_new_videos_of_three_rungs_each():
    """Every callback names videos no other one does (or the web side would call it a duplicate
    and the worker would find the rungs done), and each video needs 3 rungs of the default ladder."""
    parsed = [parse_upload(json.loads(upload_body(n))) for n in range(3)]
    ids = [v for p in parsed for v in p.refs["video_ids"]]
    assert len(ids) == 6 and len(set(ids)) == 6
    cfg = TranscoderSchema().load({"base_url": "http://127.0.0.1:1"})
    assert [rungs_for(cfg, v) for v in parsed[0].data["data"]["videoListInfo"]] == [["360", "480", "720"]] * 2


def test_upload_run_waits_for_every_create_and_counts_it(tmp_path):
    """The upload run ends once every rung's submit has made its Muducloud create: the figures
    count 6 creates per callback at the simulator, one RQ job per event, and the paced run too."""
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, "-m", "bench.pipeline", "--path", "upload", "--events", "10",
                           "--paced-events", "5", "--rate", "20", "--skip-reference", "--processes", "1",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "upload path:" in proc.stdout and "live path:" not in proc.stdout
    assert "received → first Muducloud create made: p50" in proc.stdout
    runs = json.loads(out.read_text())["runs"]
    assert set(runs) == {"upload"}
    for name, events in (("full speed", 10), ("paced 20/s", 5)):
        r = runs["upload"][name]
        assert r["statuses"] == {"succeeded": 6 * events}, r
        assert r["vendor_calls"] == 6 * events and r["jobs"] == events, r
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]

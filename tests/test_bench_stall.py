"""bench/stall.py runs as documented: Redis SIGSTOPped under load, every callback answered 200
from the spool and queued once after it drained (behaviour only: the figures are the bench's)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_bench_stall_answers_every_callback_and_loses_none():
    out = subprocess.run([sys.executable, "-m", "bench.stall", "--clients", "4", "--stall-seconds", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.strip().startswith("during the stall:") and "p99" in line for line in lines), out.stdout
    answered = next(line for line in lines if "answered 200:" in line)
    assert "MISMATCH" not in answered, answered

"""bench/stall.py runs as documented: Redis SIGSTOPped under load, every callback answered 200
from the spool and queued once after it drained (behaviour only: the figures are the bench's)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_bench_stall_answers_every_callback_and_loses_none():
    out = subprocess.run([sys.executable, "-m", "bench.stall", "--rate", "100",
                          "--stall-seconds", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    during = next(line.strip() for line in lines if line.strip().startswith("due during the stall:"))
    assert "p99" in during, out.stdout
    # Open loop: the callbacks keep coming on schedule while the server waits for Redis.
    due = int(during.split(":")[1].split()[0])
    assert due >= 0.8 * 100 * 2, during
    answered = next(line for line in lines if "answered 200:" in line)
    assert "MISMATCH" not in answered, answered

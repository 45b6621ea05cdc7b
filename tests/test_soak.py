"""The soak runner (bench/soak.py), run tiny as a user would: its own redis-server, simulators,
gunicorn and workers, one Redis kill, one worker kill, 30 % vendor faults.

The first test holds the runner to its contract (every figure printed, exit code matching the
figures, done in time). The second asserts the goal, all correctness figures zero: it says
whether the worker side is correct under this tiny load, and may fail while it is not.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.soak import CORRECTNESS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--callbacks", "60", "--rooms", "3", "--rate", "15", "--redis-kills", "1", "--redis-down", "2",
        "--worker-kills", "1", "--fault-rate", "0.3", "--drain-timeout", "30", "--seed", "7"]
FIGURE = re.compile(r"^([a-z ]+): (\d+)\b", re.MULTILINE)


@pytest.fixture(scope="module")
def tiny_run() -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bench.soak", *TINY], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    return proc, time.monotonic() - started


def figures(stdout: str) -> dict[str, int]:
    return {name: int(value) for name, value in FIGURE.findall(stdout)}


def test_tiny_soak_prints_every_figure_and_exits_by_them(tiny_run):
    proc, took = tiny_run
    found = figures(proc.stdout)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert set(CORRECTNESS) <= set(found), proc.stdout
    assert "acknowledged" in found and re.search(r"^drain time: [\d.]+ s", proc.stdout, re.MULTILINE), proc.stdout
    assert re.search(r"^rule: .*latest signed time", proc.stdout, re.MULTILINE)
    assert found["acknowledged"] > 0
    assert proc.returncode == (1 if any(found[k] for k in CORRECTNESS) else 0), proc.stdout
    assert took < 60, f"the tiny soak took {took:.0f} s"


def test_tiny_soak_is_correct(tiny_run):
    """The goal of the worker side: nothing lost, nothing done twice, everything in its final
    state, drained in time. Fails (with the figures) while the worker side falls short."""
    proc, _ = tiny_run
    found = figures(proc.stdout)
    assert {k: found.get(k) for k in CORRECTNESS} == dict.fromkeys(CORRECTNESS, 0), proc.stdout
    assert proc.returncode == 0

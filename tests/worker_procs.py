"""Real `mediahook worker` processes for tests: a fixture that starts them on a config of the
base config plus vendor sections, with a chosen number of job processes, and stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _merge
from tests.vendor_harness import ROOT, toml_dumps


class Worker:
    """`mediahook worker` in its own process group, ``processes`` job processes."""

    def __init__(self, config: Path, log: Path, processes: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAHOOK_") and k != "REDIS_URL"}
        env.update(MEDIAHOOK_CONFIG=str(config), MEDIAHOOK_WORKER_PROCESSES=str(processes))
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], cwd=ROOT, env=env,
                                     stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def start_worker(base_config, tmp_path):
    started: list[Worker] = []

    def start(sections: dict, processes: int = 1) -> Worker:
        config = tmp_path / f"worker-{len(started)}.toml"
        config.write_text(toml_dumps(_merge(base_config, sections)))
        worker = Worker(config, tmp_path / f"worker-{len(started)}.log", processes)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()

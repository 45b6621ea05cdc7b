"""Job functions for tests/test_worker_pool.py, importable by a real `mediahook worker`."""

from __future__ import annotations

import os
import signal
import time

from rq import get_current_job

DONE = "test:pool:done"  # list of "<job id> <pid>", one per job run to its end


def mark() -> None:
    """Record that this job ran, and in which process."""
    job = get_current_job()
    job.connection.rpush(DONE, f"{job.id} {os.getpid()}")


def pause(seconds: float) -> None:
    time.sleep(seconds)
    mark()


def hang() -> None:
    time.sleep(3600)


def crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)

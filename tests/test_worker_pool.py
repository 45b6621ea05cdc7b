"""`mediahook worker`: a pool of long-lived job processes (workers/pool.py). What a fork per job
gave is kept (a hung job stopped at its timeout, a crash or a leak confined to one process, a
warm SIGTERM), and actions keep running while events pour in."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import Job, JobStatus

from app.core.queues import ACTIONS_QUEUE, EVENTS_QUEUE
from tests import pool_jobs
from tests.helpers import wait_until
from tests.vendor_harness import WorkerProcess, _exited

ROOT = Path(__file__).resolve().parent.parent


class Pool:
    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc, self.log = proc, log

    def job_processes(self) -> list[int]:
        """The pool's direct children (its job processes)."""
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.proc.pid and fields[0] != "Z":
                    out.append(int(entry))
        return out

    def descendants(self) -> list[int]:
        return WorkerProcess.descendants(self)  # type: ignore[arg-type]  # only reads .pid

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def pool(write_config: Callable[..., Path], tmp_path: Path) -> Iterator[Callable[..., Pool]]:
    started: list[Pool] = []

    def start(*args: str) -> Pool:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAHOOK_") and k != "REDIS_URL"}
        env["MEDIAHOOK_CONFIG"] = str(write_config())
        log = tmp_path / f"pool-{len(started)}.log"
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", *args], cwd=ROOT, env=env,
                                stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        p = Pool(proc, log)
        started.append(p)
        return p

    yield start
    for p in started:  # every process of the pool, and until they have exited: one still dying
        others = p.descendants()  # while it waits on the queue could take the next test's job
        if p.proc.poll() is None:
            os.killpg(p.proc.pid, signal.SIGKILL)
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        p.proc.wait(10)
        wait_until(lambda others=others: all(_exited(pid) for pid in others), timeout=10,
                   what="the pool's processes to exit")


def done(redis: Redis) -> dict[str, int]:
    return dict(line.decode().split() for line in redis.lrange(pool_jobs.DONE, 0, -1))


def test_actions_keep_running_while_events_pour_in(pool, redis_client):
    """One job process, the events queue never empty: the queued actions still run (RQ's
    default order, events always first, would leave them all until the last event)."""
    events = Queue(EVENTS_QUEUE, connection=redis_client)
    actions = Queue(ACTIONS_QUEUE, connection=redis_client)
    events.enqueue_many([Queue.prepare_data("tests.pool_jobs.pause", args=(0.01,)) for _ in range(2000)])
    action_ids = [actions.enqueue("tests.pool_jobs.mark").id for _ in range(20)]
    p = pool("--processes", "1")
    wait_until(lambda: set(action_ids) <= set(done(redis_client)), timeout=60, what="every queued action to run")
    assert events.count > 1000, "the actions ran only once the events were done"
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(30) == 0, p.output()


def test_a_hung_job_is_stopped_at_its_timeout_and_the_process_goes_on(pool, redis_client):
    queue = Queue(ACTIONS_QUEUE, connection=redis_client)
    hung = queue.enqueue("tests.pool_jobs.hang", job_timeout=2)
    after = queue.enqueue("tests.pool_jobs.mark")
    p = pool("--processes", "1")
    wait_until(lambda: after.id in done(redis_client), timeout=30, what="the job after the hung one")
    job = Job.fetch(hung.id, connection=redis_client)
    assert job.get_status() == JobStatus.FAILED
    assert "JobTimeoutException" in (job.latest_result().exc_string or "")
    assert len(p.job_processes()) == 1


def test_a_crashing_job_takes_down_its_process_only(pool, redis_client):
    queue = Queue(ACTIONS_QUEUE, connection=redis_client)
    p = pool("--processes", "2")
    wait_until(lambda: len(p.job_processes()) == 2, what="two job processes")
    before = set(p.job_processes())
    crash = queue.enqueue("tests.pool_jobs.crash")
    try:
        wait_until(lambda: len(set(p.job_processes()) - before) == 1 and len(p.job_processes()) == 2, timeout=30,
                   what="the crashed process to be replaced")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: job {crash.get_status(refresh=True)}, queued {queue.job_ids}, processes "
                             f"{before} -> {p.job_processes()}, workers "
                             f"{[(w.pid, w.state) for w in Worker.all(connection=redis_client)]}\n"
                             f"{p.output()}") from None
    ids = [queue.enqueue("tests.pool_jobs.mark").id for _ in range(4)]
    wait_until(lambda: set(ids) <= set(done(redis_client)), timeout=30, what="jobs after the crash")
    assert "killed by SIGKILL" in p.output()
    assert p.proc.poll() is None


@pytest.mark.parametrize("limit", [("--max-jobs", "2"), ("--max-memory", "1")])
def test_a_job_process_is_recycled_after_max_jobs_or_memory(pool, redis_client, limit):
    queue = Queue(ACTIONS_QUEUE, connection=redis_client)
    ids = [queue.enqueue("tests.pool_jobs.mark").id for _ in range(6)]
    p = pool("--processes", "1", *limit)
    wait_until(lambda: set(ids) <= set(done(redis_client)), timeout=60, what="every job")
    pids = done(redis_client)
    assert len(set(pids.values())) >= (3 if limit[0] == "--max-jobs" else 6), pids
    assert "recycled" in p.output()


def test_sigterm_lets_the_running_job_finish(pool, redis_client):
    queue = Queue(ACTIONS_QUEUE, connection=redis_client)
    p = pool("--processes", "2")
    job = queue.enqueue("tests.pool_jobs.pause", args=(2.0,))
    wait_until(lambda: job.get_status(refresh=True) == JobStatus.STARTED, timeout=20, what="the job to start")
    p.proc.send_signal(signal.SIGTERM)  # the pool's own pid only, as systemd's KillMode=mixed does
    assert p.proc.wait(30) == 0, p.output()
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert job.id in done(redis_client)
    assert p.job_processes() == []

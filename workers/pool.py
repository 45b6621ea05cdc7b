"""What `mediahook worker` runs: a pool of long-lived job processes, each an RQ worker that runs
its jobs in-process (no fork per job), under a small supervisor.

Why: a fork per job (RQ's ``Worker``) costs more than mediahook's jobs themselves (~20 events/s
on 2 cores against ~100 with in-process workers, docs/benchmarks.md). What the fork gave is
kept another way:

* a job that hangs is stopped at its timeout: RQ's SIGALRM death penalty, in each process's
  main thread, where the jobs run;
* a job that crashes its process (or leaks memory) takes down that process only: the
  supervisor starts another in its place, and a process is recycled after ``max_jobs`` jobs or
  once it holds more than ``max_memory_mb`` MB;
* a dead process's job is resumed as quickly as a dead work horse's: a thread beats the job's
  heartbeat while it runs, with the bounded timings of ``workers.recovery``;
* SIGTERM to the supervisor is a warm shutdown of every process: running jobs finish first.

Actions never starve behind a steady flow of events: every process takes its queues in turn
(RQ's ``round_robin`` dequeue strategy), so a backlog of one queue cannot hold the other back.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker, WorkerStatus

from workers import recovery

log = logging.getLogger("mediahook.worker")

DEFAULT_MAX_JOBS = 10_000
DEFAULT_MAX_MEMORY_MB = 300
DEQUEUE_STRATEGY = "round_robin"
HEARTBEAT_EVERY = 1.0  # seconds between two beats of a worker's own key outside a job's start
SUSPENSION_READ_EVERY = 1.0  # seconds between two reads of `rq suspend`'s flag
# A process that dies sooner than this after its start is restarted after a growing pause
# (a bug that kills every process at once must not turn into a fork loop).
QUICK_DEATH_SECONDS = 5.0
MAX_RESTART_PAUSE = 30.0

EXIT_OK = 0  # stopped on request, or recycled
EXIT_GAVE_UP = 1  # RQ gave up by itself (Redis lost in the middle of a job)


def rss_mb() -> float:
    """This process's resident memory, in MB (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class PoolWorker(SimpleWorker):
    """RQ's SimpleWorker (jobs in-process) that beats the running job's heartbeat from a thread,
    as a forking worker's main process does for its horse, and asks to be recycled once it
    holds more than ``max_memory_mb``. Run it through ``recovery.make_worker`` (its timings)."""

    max_memory_mb: float = DEFAULT_MAX_MEMORY_MB
    recycle_reason: str | None = None
    jobs_done = 0

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # Beaten every job_monitoring_interval by _beat: the bounded TTL of a forking worker.
        beat = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            beat = max(1, int(min(job.timeout - working_time, beat)))
        return beat + recovery.HEARTBEAT_GRACE

    # Fewer Redis round trips per job. RQ beats the worker's own key (TTL worker_ttl + 60 s) three
    # times per job, three commands each, and writes its state twice: at hundreds of jobs a
    # second that is a third of the round trips. A direct beat within a second of the last one,
    # and a state write that changes nothing, are skipped; the others go in one pipeline.
    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
            self._beat_at = time.monotonic()
            return
        if time.monotonic() - getattr(self, "_beat_at", -1e9) < HEARTBEAT_EVERY:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            super().heartbeat(timeout, pipeline=pipe)
            pipe.execute()
        self._beat_at = time.monotonic()

    # `rq suspend` is read at most once a second, not before every job (a round trip each).
    def check_for_suspension(self, burst: bool) -> None:
        if time.monotonic() - getattr(self, "_suspension_read_at", -1e9) < SUSPENSION_READ_EVERY:
            return
        super().check_for_suspension(burst)
        self._suspension_read_at = time.monotonic()

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is None and state == getattr(self, "_state", None):
            return
        super().set_state(state, pipeline=pipeline)

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        self._start_beating(job, execution)
        try:
            self.perform_job(job, queue, execution)
        finally:
            self._stop_beating()
        self.set_state(WorkerStatus.IDLE)
        self.jobs_done += 1
        if self.max_memory_mb and (mb := rss_mb()) > self.max_memory_mb:
            self.recycle_reason = f"holds {mb:.0f} MB (more than {self.max_memory_mb:g})"
            self._stop_requested = True  # the work loop stops before its next job

    # One beating thread per process, started with its first job: a thread per job would cost
    # more than a short job. ``_current`` is the (job, execution, started) being run, or None.
    _current: tuple[Job, Any, float] | None = None
    _beater: threading.Thread | None = None

    def _start_beating(self, job: Job, execution: Any) -> None:
        if self._beater is None:
            self._beat_lock = threading.Lock()
            self._beater = threading.Thread(target=self._beat, daemon=True, name="mediahook-job-heartbeat")
            self._beater.start()
        with self._beat_lock:
            self._current = (job, execution, time.monotonic())

    def _stop_beating(self) -> None:
        if self._beater is not None:
            with self._beat_lock:  # waits for a beat under way: none lands after this
                self._current = None

    def _beat(self) -> None:
        interval = self.job_monitoring_interval
        while True:
            time.sleep(min(1.0, interval))
            with self._beat_lock:
                if self._current is None or time.monotonic() - self._current[2] < interval:
                    continue
                job, execution, _ = self._current
                try:
                    self.maintain_heartbeats(job, execution)
                    self._current = (job, execution, time.monotonic())
                except RedisError as exc:  # the job itself will meet it; the next beat tries again
                    log.warning("job heartbeat failed: %s", exc.__class__.__name__)

    # A beat landing after the job left its registry would put it back (and make a finished job
    # look abandoned): stop beating before RQ records the outcome.
    def handle_job_success(self, *args: Any, **kwargs: Any) -> None:
        self._stop_beating()
        super().handle_job_success(*args, **kwargs)

    def handle_job_failure(self, *args: Any, **kwargs: Any) -> None:
        self._stop_beating()
        super().handle_job_failure(*args, **kwargs)


def run_worker(worker: Any, *, max_jobs: int | None, logging_level: str, dequeue_strategy: str) -> int:
    """Run one RQ worker until it stops; its exit code: EXIT_OK when it was asked to stop or
    is being recycled, EXIT_GAVE_UP when RQ gave up by itself."""
    try:
        worker.work(with_scheduler=True, logging_level=logging_level, max_jobs=max_jobs,
                    dequeue_strategy=dequeue_strategy)
    except RedisError as exc:  # raised by RQ's own clean-up after it gave up
        log.error("worker stopped, Redis lost (%s: %s)", exc.__class__.__name__, exc)
        return EXIT_GAVE_UP
    if getattr(worker, "stop_requested_at", None) is not None:
        return EXIT_OK
    if getattr(worker, "recycle_reason", None):
        log.info("worker %s recycled: it %s", worker.name, worker.recycle_reason)
        return EXIT_OK
    if max_jobs is not None and getattr(worker, "jobs_done", 0) >= max_jobs:
        log.info("worker %s recycled after %d jobs", worker.name, max_jobs)
        return EXIT_OK
    # RQ's work() returns both on a requested shutdown and when it gave up on an error.
    log.error("worker stopped without a shutdown request (see above)")
    return EXIT_GAVE_UP


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the supervisor dies, so that no job process
    outlives it (a supervisor killed by the OOM killer, say)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Pool:
    """Keeps ``processes`` job processes running until SIGTERM/SIGINT, then stops them warmly."""

    def __init__(self, processes: int, make_worker: Callable[[int], Any], *, max_jobs: int | None,
                 logging_level: str, dequeue_strategy: str = DEQUEUE_STRATEGY) -> None:
        self.processes = processes
        self.make_worker = make_worker  # (process index) -> an RQ worker on a fresh connection
        self.max_jobs = max_jobs
        self.logging_level = logging_level
        self.dequeue_strategy = dequeue_strategy
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (index, started at)
        self.pauses: dict[int, float] = {}  # index -> pause before its next restart
        self.stopping = False

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the job process
            code = EXIT_GAVE_UP
            try:
                _die_with_parent()
                # And so does what it forks (RQ's scheduler): left behind, it would keep this
                # process's Redis connections open, and Redis would hand the next job to a BLPOP
                # that nobody reads any more.
                os.register_at_fork(after_in_child=_die_with_parent)
                # A group of its own: a signal to the supervisor's group (a terminal's Ctrl-C, a
                # `kill -- -PGID`) reaches the supervisor only, which passes it on once. Two
                # SIGTERMs in a row make RQ raise its stop exception inside whatever runs, a
                # logging call included, which then swallows it.
                os.setpgid(0, 0)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = run_worker(self.make_worker(index), max_jobs=self.max_jobs,
                                  logging_level=self.logging_level, dequeue_strategy=self.dequeue_strategy)
            except BaseException:
                log.exception("job process %d failed", os.getpid())
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = (index, time.monotonic())

    def _stop(self, signum: int, _frame: Any) -> None:
        if not self.stopping:
            log.info("warm shutdown requested (%s): running jobs finish first", signal.Signals(signum).name)
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        log.info("worker pool: %d job processes", self.processes)
        for index in range(self.processes):
            self._spawn(index)
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid not in self.children:
                continue
            index, started = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if self.stopping:
                continue
            lived = time.monotonic() - started
            pause = 0.0
            if code != EXIT_OK:
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
                log.error("job process %d died (%s) after %.0f s; starting another", pid, how, lived)
                if lived < QUICK_DEATH_SECONDS:
                    pause = self.pauses[index] = min(max(self.pauses.get(index, 0.5) * 2, 1.0), MAX_RESTART_PAUSE)
            if pause:
                time.sleep(pause)
            if not self.stopping:
                self._spawn(index)
        return EXIT_OK


def default_processes() -> int:
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


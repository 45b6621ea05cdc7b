"""Resuming what a dead worker left behind, within a minute: RQ's timings, bounded.

RQ gives a job up (and retries it) only when two things have happened: the job's entry in its
StartedJobRegistry, pushed forward by the worker's heartbeat, has expired, and some worker has
run its maintenance pass since. With RQ's defaults that is minutes: the entry lives the job
monitoring interval (30 s) + a fixed 60 s; maintenance runs every 10 min, and an idle worker
only looks at the clock between two waits on the queue (405 s each, its TTL - 15 s). A dead
worker's scheduler lock lasts 61 s, and the queue's maintenance lock, if its holder dies while
cleaning, 899 s. :func:`worker_class` bounds each of them:

========================================  =========  ==========================================
what                                       RQ         here
========================================  =========  ==========================================
heartbeat of a running job                 30 s       ``JOB_MONITORING_INTERVAL``
a job's registry entry outlives its beat   +60 s      ``HEARTBEAT_GRACE``
maintenance (finds abandoned jobs)         600 s      ``MAINTENANCE_INTERVAL``
an idle worker's wait on the queue         405 s      ``WORKER_TTL`` - 15 s
scheduler lock of a dead scheduler         61 s       ``SCHEDULER_LOCK_TTL``
a scheduler retries the locks it lacks     120 s      ``SCHEDULER_LOCK_TTL``
a queue's maintenance lock                 899 s      ``MAINTENANCE_LOCK_TTL``
========================================  =========  ==========================================

``resume_bound`` adds them up: the worst case from a worker's death to its job running again
on an idle worker. A worker that forks a work horse (``rq.Worker`` and its subclasses) beats
during a job; RQ's ``SimpleWorker`` cannot, so RQ keeps its entry for the job's timeout + 60 s
and this module leaves that alone (a job running longer than the grace would otherwise be taken
for abandoned and run twice); ``workers.pool.PoolWorker`` beats from a thread and sets its own.

Each worker's maintenance pass also runs the sweep (``workers.sweep``): events and actions whose
record says they are not done but whose job is nowhere in RQ.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from redis import Redis
from rq import Worker, worker_registration
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.job import Job
from rq.registry import clean_registries
from rq.scheduler import RQScheduler
from rq.utils import now
from rq.worker import BaseWorker

log = logging.getLogger(__name__)

JOB_MONITORING_INTERVAL = 5
HEARTBEAT_GRACE = 15
MAINTENANCE_INTERVAL = 15
WORKER_TTL = 20  # an idle worker waits WORKER_TTL - 15 = 5 s on the queue between maintenance checks
SCHEDULER_LOCK_TTL = 15
MAINTENANCE_LOCK_TTL = 30
SCHEDULER_INTERVAL = 1  # RQ's: how often the scheduler moves due jobs to their queue


def dequeue_timeout() -> int:
    """What RQ derives from the worker TTL (``BaseWorker.dequeue_timeout``)."""
    return max(1, WORKER_TTL - 15)


def resume_bound(first_retry_seconds: float) -> float:
    """Worst case, in seconds, from a worker's death (with its scheduler) to its running job
    being queued again, given an idle worker and the job's first retry interval.

    The job's entry lapses ``JOB_MONITORING_INTERVAL + HEARTBEAT_GRACE`` after the last beat;
    a surviving worker's maintenance pass comes at most ``MAINTENANCE_INTERVAL`` + one wait on
    the queue later and schedules the retry; meanwhile the dead scheduler's lock has lapsed and
    a maintenance pass has started a scheduler, which queues the retry once due.
    """
    pass_gap = MAINTENANCE_INTERVAL + dequeue_timeout()
    found = JOB_MONITORING_INTERVAL + HEARTBEAT_GRACE + pass_gap
    scheduler_back = SCHEDULER_LOCK_TTL + pass_gap
    return max(found + first_retry_seconds, scheduler_back) + SCHEDULER_INTERVAL


# Refresh only a lock we still hold: another scheduler may have taken it over meanwhile.
_SHORTEN_LOCKS = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('EXPIRE', key, ARGV[2]) end
end
return 0
"""


class BoundedLockScheduler(RQScheduler):
    """RQ's scheduler, but its locks lapse ``SCHEDULER_LOCK_TTL`` after its last beat (RQ: 61 s),
    so a crashed scheduler's queues are taken over by another worker within seconds.

    RQ writes the lock with its own TTL; this shortens it right after, in the same beat (the
    scheduler beats every second, so a lock briefly at RQ's TTL is a rare, bounded case)."""

    def _shorten(self) -> None:
        if self._acquired_locks:
            keys = [self.get_locking_key(name) for name in sorted(self._acquired_locks)]
            self.connection.eval(_SHORTEN_LOCKS, len(keys), *keys, self.name, SCHEDULER_LOCK_TTL)

    @property
    def should_reacquire_locks(self) -> bool:
        """A scheduler holding some queues' locks tries for the others every SCHEDULER_LOCK_TTL
        (RQ: every 2 min), so it also takes over the queues of a scheduler that died."""
        if self._queue_names == self.acquired_locks:
            return False
        if not self.lock_acquisition_time:
            return True
        return (datetime.now() - self.lock_acquisition_time).total_seconds() > SCHEDULER_LOCK_TTL

    def acquire_locks(self, auto_start: bool = False) -> set[str]:
        locks = super().acquire_locks(auto_start=auto_start)
        self._shorten()
        return locks

    def heartbeat(self) -> None:
        super().heartbeat()
        self._shorten()


class RecoveryMixin(BaseWorker):
    """Mixed in front of the RQ worker class ``mediahook worker`` runs (see :func:`worker_class`)."""

    stop_requested_at: float | None = None
    after_maintenance: Any = None  # a callable(redis) run after each maintenance pass (the sweep)

    def handle_warm_shutdown_request(self) -> None:
        self.stop_requested_at = time.time()  # a shutdown someone asked for, not RQ giving up
        super().handle_warm_shutdown_request()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        if not isinstance(self, Worker):  # no heartbeat during the job: keep RQ's timeout + 60 s
            return super().get_heartbeat_ttl(job, working_time)
        beat = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            beat = max(1, int(min(job.timeout - working_time, beat)))
        return beat + HEARTBEAT_GRACE

    def clean_registries(self) -> None:
        """RQ's, with a maintenance lock that lapses in ``MAINTENANCE_LOCK_TTL`` (RQ: 899 s) if its
        holder dies while cleaning."""
        for queue in self.queues:
            if self.connection.set(queue.registry_cleaning_key, 1, nx=True, ex=MAINTENANCE_LOCK_TTL):
                try:
                    clean_registries(queue, self._exc_handlers)
                    worker_registration.clean_worker_registry(queue)
                    queue.intermediate_queue.cleanup(self, queue)
                finally:
                    self.connection.delete(queue.registry_cleaning_key)
        self.last_cleaned_at = now()

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        if self.after_maintenance is not None:
            try:
                self.after_maintenance(self.connection)
            except Exception:  # the sweep must never stop the worker; the next pass tries again
                log.exception("sweep failed; trying again at the next maintenance pass")

    def _start_scheduler(self, burst: bool = False, logging_level: str | None = "INFO",
                         date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
                         log_format: str = DEFAULT_LOGGING_FORMAT) -> None:
        # RQ's, with BoundedLockScheduler in place of RQScheduler.
        self.scheduler = BoundedLockScheduler(
            self.queues, connection=self.connection, interval=SCHEDULER_INTERVAL,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format, log_format=log_format, serializer=self.serializer)
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            if burst:
                try:
                    self.scheduler.register_birth()
                    self.scheduler.enqueue_scheduled_jobs()
                finally:
                    self.scheduler.release_locks()
                    self.scheduler.register_death()
            else:
                self.scheduler.start()


def worker_class(base: type[BaseWorker]) -> type[BaseWorker]:
    """``base`` with the bounded timings above (a subclass named after it)."""
    return type(f"Recovering{base.__name__}", (RecoveryMixin, base), {})


def make_worker(base: type[BaseWorker], queues: list[str], redis: Redis, after_maintenance: Any = None) -> BaseWorker:
    """A worker of ``worker_class(base)`` on ``queues`` with every timing of this module."""
    worker = worker_class(base)(queues, connection=redis, maintenance_interval=MAINTENANCE_INTERVAL,
                                job_monitoring_interval=JOB_MONITORING_INTERVAL, worker_ttl=WORKER_TTL)
    worker.after_maintenance = after_maintenance
    return worker

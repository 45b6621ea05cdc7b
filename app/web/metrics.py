"""Prometheus metrics at ``GET /metrics``: the web process's own counters, plus figures read from
Redis and the spool folder when scraped.

Where each figure lives, and why (several web hosts, several worker hosts, one Redis):

- **Callbacks** (count by source/type/outcome/status, answer latency per source) are counted
  by the web process that answered, in prometheus_client's multiprocess mode
  (``PROMETHEUS_MULTIPROC_DIR``, set up by deploy/gunicorn.conf.py), so a scrape of any gunicorn
  worker reports the whole host. Each web host reports its own callbacks: sum them.
- **Actions and vendor calls** (actions by vendor/kind/outcome, retries, vendor call latency)
  happen in RQ work horses on whatever host runs the worker. They are counted in Redis (the hash
  ``mh:metrics``, one HINCRBY pipeline per action outcome or vendor call) and read back by
  ``/metrics`` at scrape time, so every web host reports them for the whole fleet, worker hosts
  need no exporter of their own, and nothing is lost when a work horse exits.
- **Queues** (depth, age of the oldest queued job, scheduled/started/failed jobs per RQ queue,
  actions failed for good, registered workers) are read from Redis at scrape time.
- **Spool** depth is read from this host's spool folder at scrape time, and the free space of
  the filesystem it is on (``mediahook_spool_filesystem_*_bytes``, statvfs), so the "Spool disk"
  alert needs no node_exporter.
- **Build and process**: ``mediahook_build_info{version, python}`` (1), and ``process_*``
  (prometheus_client's ProcessCollector). Under gunicorn a scrape is answered by any one worker,
  so unlabelled process figures would jump between processes; instead every gunicorn process of
  the host (master and workers) is reported with a ``pid`` label, read from /proc at scrape
  time. Outside gunicorn: this one process, labelled the same way. Aggregate with
  ``sum without (pid)`` (after ``rate`` for the CPU counter).

The Redis-read figures (actions, vendor calls, queues) are the same on every web host: aggregate
them with ``max without (instance)``, not ``sum``. ``mediahook_redis_up`` is 0 when the scrape
could not read Redis (those figures are then absent; the web's own are still there).

Label values are bounded: event types not in a source's schemas are ``other``, ``unparsed``
when the payload was refused before its type was known; action kinds and vendors come from the
action registry (workers/actions.py), so they are bounded too.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from typing import Any

from flask import Flask, Response, current_app, request
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from redis import Redis, RedisError
from rq.worker_registration import REDIS_WORKER_KEYS

from app.core.config import Settings
from app.core.counters import REDIS_KEY, VENDOR_BUCKETS
from app.core.logs import CALLBACK_KEY
from app.core.queues import FAILED_INDEX, queue_figures
from app.sources import hook_routes
from app.web import spool

log = logging.getLogger(__name__)

ANSWER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# HTTP status of a refused callback -> outcome; a 200's outcome is what receive.deliver noted.
_OUTCOME_BY_STATUS = {"400": "rejected", "401": "rejected", "405": "rejected", "413": "rejected",
                      "415": "rejected", "503": "unavailable"}


# --- web side: callbacks ----------------------------------------------------------------------

class CallbackMetrics:
    """WSGI wrapper: counts every request to a callback path and times its answer.

    A WSGI wrapper rather than Flask hooks: it also sees the 405s and 413s Flask answers before
    any view runs, and costs one call instead of two hooks. Measured: ~2 µs of CPU per callback,
    ~4 µs in multiprocess mode (three mmap writes, each with a lock and a getpid()).
    """

    def __init__(self, wsgi_app: Callable, routes: dict[str, str], registry: CollectorRegistry | None) -> None:
        self.wsgi_app = wsgi_app
        self.routes = routes  # PATH_INFO -> source
        kw: dict[str, Any] = {"registry": registry}
        self.callbacks = Counter("mediahook_callbacks", "Callbacks answered, by source, event type, outcome "
                                 "(accepted duplicate ignored spooled rejected unavailable error) and HTTP status",
                                 ["source", "type", "outcome", "status"], **kw)
        self.latency = Histogram("mediahook_callback_seconds", "Time to answer a callback, by source",
                                 ["source"], buckets=ANSWER_BUCKETS, **kw)
        self._observe: dict[str, Callable[[float], None]] = {}
        self._counters: dict[tuple[str, str, str, str], Callable[[], None]] = {}
        self._failed = False

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        source = self.routes.get(environ.get("PATH_INFO"))
        if source is None:
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        status = "500"

        def capture(line: str, headers: list, exc_info: Any = None) -> Callable:
            nonlocal status
            status = line[:3]
            return start_response(line, headers, exc_info)

        try:
            return self.wsgi_app(environ, capture)
        finally:
            try:
                self._record(source, time.perf_counter() - started, environ.get(CALLBACK_KEY), status)
            except Exception:  # counting must never fail a callback (a metrics folder gone, say)
                if not self._failed:
                    self._failed = True
                    log.exception("metrics: a callback could not be counted (logged once per process)")

    def _record(self, source: str, seconds: float, noted: tuple[str, str, str] | None, status: str) -> None:
        observe = self._observe.get(source)
        if observe is None:
            observe = self._observe[source] = self.latency.labels(source).observe
        observe(seconds)
        if status == "200" and noted:
            _, event_type, outcome = noted
        else:
            event_type = noted[1] if noted else "unparsed"
            outcome = _OUTCOME_BY_STATUS.get(status, "error")
        key = (source, event_type, outcome, status)
        inc = self._counters.get(key)
        if inc is None:
            inc = self._counters[key] = self.callbacks.labels(*key).inc
        inc()


# --- scrape time: Redis and the spool ---------------------------------------------------------

def _redis_counters(raw: dict[bytes, bytes]) -> list[Metric]:
    actions = CounterMetricFamily("mediahook_actions", "Action attempts by vendor, kind and outcome "
                                  "(succeeded skipped retrying failed); from Redis: fleet-wide",
                                  labels=["vendor", "kind", "outcome"])
    retries = CounterMetricFamily("mediahook_action_retries", "Action retries scheduled, by vendor, kind and "
                                  "reason; from Redis: fleet-wide", labels=["vendor", "kind", "reason"])
    calls = CounterMetricFamily("mediahook_vendor_calls", "HTTP calls to vendors by result; from Redis: "
                                "fleet-wide", labels=["vendor", "result"])
    swept = {outcome: CounterMetricFamily(f"mediahook_sweep_{outcome}", text, labels=["what"])
             for outcome, text in (("requeued", "Events and actions the sweep found with no live job and queued "
                                               "again; from Redis: fleet-wide"),
                                   ("failed", "Actions the sweep found still pending after RQ gave their job up, "
                                             "marked failed; from Redis: fleet-wide"))}
    buckets: dict[str, list[float]] = {}
    sums: dict[str, float] = {}
    for name, value in sorted(raw.items()):
        metric, *labels = name.decode().split("|")
        if metric == "action" and len(labels) == 3:
            actions.add_metric(labels, int(value))
        elif metric == "retry" and len(labels) == 3:
            retries.add_metric(labels, int(value))
        elif metric == "call" and len(labels) == 2:
            calls.add_metric(labels, int(value))
        elif metric == "call_le" and len(labels) == 2:
            counts = buckets.setdefault(labels[0], [0] * (len(VENDOR_BUCKETS) + 1))
            counts[len(VENDOR_BUCKETS) if labels[1] == "inf" else int(labels[1])] += int(value)
        elif metric == "call_sum" and len(labels) == 1:
            sums[labels[0]] = float(value)
        elif metric == "sweep" and len(labels) == 2 and labels[0] in swept:
            swept[labels[0]].add_metric(labels[1:], int(value))
    latency = HistogramMetricFamily("mediahook_vendor_call_seconds", "HTTP call latency by vendor; "
                                    "from Redis: fleet-wide", labels=["vendor"])
    for vendor, counts in sorted(buckets.items()):
        cumulative, total = [], 0
        for bound, count in zip((*map(str, VENDOR_BUCKETS), "+Inf"), counts, strict=True):
            total += count
            cumulative.append((bound, total))
        latency.add_metric([vendor], cumulative, sums.get(vendor, 0.0))
    return [actions, retries, calls, latency, *swept.values()]


def _queue_metrics(redis: Redis) -> list[Metric]:
    """Depth, oldest job age and registry sizes per RQ queue, actions failed for good, workers."""
    figures = queue_figures(redis)
    pipe = redis.pipeline(transaction=False)
    pipe.zcard(FAILED_INDEX)
    pipe.scard(REDIS_WORKER_KEYS)
    pipe.hgetall(REDIS_KEY)
    failed_for_good, workers, counters = pipe.execute()

    g: dict[str, GaugeMetricFamily] = {
        "depth": GaugeMetricFamily("mediahook_queue_depth", "Jobs waiting in the RQ queue", labels=["queue"]),
        "oldest_age": GaugeMetricFamily("mediahook_queue_oldest_seconds", "Age of the oldest job waiting in the "
                                        "RQ queue (0 when empty)", labels=["queue"]),
        "scheduled": GaugeMetricFamily("mediahook_queue_scheduled_jobs", "Jobs scheduled for later (retries, "
                                       "polls)", labels=["queue"]),
        "started": GaugeMetricFamily("mediahook_queue_started_jobs", "Jobs being run", labels=["queue"]),
        "failed": GaugeMetricFamily("mediahook_queue_failed_jobs", "Jobs in RQ's failed registry",
                                    labels=["queue"]),
    }
    for q in figures:
        for name, family in g.items():
            family.add_metric([q["name"]], q[name])
    extra = [
        GaugeMetricFamily("mediahook_actions_failed", "Actions that failed for good and were not "
                          "replayed (mediahook failed)", value=failed_for_good),
        GaugeMetricFamily("mediahook_rq_workers", "RQ workers registered in Redis", value=workers),
    ]
    return [*g.values(), *extra, *_redis_counters(counters)]


def _spool_metrics(spool_dir: str) -> list[Metric]:
    waiting = bad = 0
    try:
        for entry in os.scandir(spool_dir):
            if entry.name.endswith(spool.SUFFIX):
                waiting += 1
            elif entry.name.endswith(spool.SUFFIX + ".bad"):
                bad += 1
    except OSError as exc:  # missing or broken: the scrape still answers (readyz says more)
        log.warning("metrics: spool folder not readable (%s)", exc)
    found = [GaugeMetricFamily("mediahook_spool_depth", "Events in this host's spool, waiting for Redis",
                               value=waiting),
             GaugeMetricFamily("mediahook_spool_bad_files", "Unreadable spool files set aside (*.bad) on this host",
                               value=bad)]
    try:
        fs = os.statvfs(spool_dir)
    except OSError:  # no folder, no figure: the depth above already says it is unreadable
        return found
    # f_bavail, not f_bfree: what the unprivileged service user can still write (as node_exporter's avail).
    return [*found,
            GaugeMetricFamily("mediahook_spool_filesystem_avail_bytes", "Space the service user can still "
                              "use on the spool folder's filesystem", value=fs.f_bavail * fs.f_frsize),
            GaugeMetricFamily("mediahook_spool_filesystem_size_bytes", "Size of the spool folder's filesystem",
                              value=fs.f_blocks * fs.f_frsize)]


def _build_info() -> Metric:
    try:
        version = metadata.version("mediahook")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "unknown"
    info = GaugeMetricFamily("mediahook_build_info", "Always 1: the running mediahook version and Python",
                             labels=["version", "python"])
    info.add_metric([version, platform.python_version()], 1)
    return info


def _gunicorn_pids(master: int) -> list[int]:
    """The master and its children (the workers), from /proc."""
    try:
        with open(f"/proc/{master}/task/{master}/children") as f:
            return [master, *map(int, f.read().split())]
    except (OSError, ValueError):
        return [master, os.getpid()]


class ProcessMetrics:
    """prometheus_client's process_* figures for each process of this web server, labelled ``pid``."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for pid in self.pids:
            # A process gone since it was listed yields nothing (ProcessCollector ignores OSError).
            for family in ProcessCollector(pid=lambda p=pid: p, registry=None).collect():
                out = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    out.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        yield from merged.values()


class ScrapeTimeCollector:
    """What /metrics reads when it is scraped: Redis (queues, worker counters) and the spool."""

    def __init__(self, redis: Redis, spool_dir: str) -> None:
        self.redis = redis
        self.spool_dir = spool_dir

    def collect(self) -> Iterator[Metric]:
        yield from _spool_metrics(self.spool_dir)
        try:
            found = _queue_metrics(self.redis)
        except RedisError as exc:
            log.warning("metrics: Redis not readable at scrape time (%s)", exc.__class__.__name__)
            found = []
        yield GaugeMetricFamily("mediahook_redis_up", "1 if this scrape could read Redis", value=1 if found else 0)
        yield from found


# --- set-up -----------------------------------------------------------------------------------

def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def init_app(app: Flask, settings: Settings) -> None:
    """Register /metrics and the WSGI wrapper that counts callbacks."""
    # Under gunicorn the counters live in PROMETHEUS_MULTIPROC_DIR (one file per process) and
    # are summed at scrape time; without it (tests, the test client) in this app's registry.
    own = None if multiprocess_dir() else CollectorRegistry()
    build_info = _build_info()
    routes = hook_routes()
    app.wsgi_app = CallbackMetrics(app.wsgi_app, routes, own)  # type: ignore[method-assign]

    def metrics() -> Response:
        registry = CollectorRegistry()
        if own is None:
            MultiProcessCollector(registry)
        else:
            registry.register(_Forward(own))
        runtime = current_app.extensions["mediahook"]
        registry.register(ScrapeTimeCollector(runtime.store.redis, settings.spool_dir))
        registry.register(_Static([build_info]))
        # A gunicorn worker's parent is the master; report all of them (see the module docstring).
        under_gunicorn = own is None and request.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/")
        registry.register(ProcessMetrics(_gunicorn_pids(os.getppid()) if under_gunicorn else [os.getpid()]))
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))  # text, or OpenMetrics if asked
        return Response(encode(registry), headers={"Content-Type": content_type})

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])


class _Static:
    """Metrics made once."""

    def __init__(self, found: list[Metric]) -> None:
        self.found = found

    def collect(self) -> Iterator[Metric]:
        yield from self.found


class _Forward:
    """A registry's metrics, collected into another registry."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from self.source.collect()

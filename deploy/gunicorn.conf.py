"""gunicorn settings for mediahook's web side (Procfile, `mediahook dev`, bench/ingest.py).

Every value can be overridden on the command line or by the environment variables named here.
"""

import multiprocessing
import os
import shutil
import sys
import tempfile

from gunicorn.glogging import Logger

# Metrics (app/web/metrics.py): every worker counts callbacks in files under PROMETHEUS_MULTIPROC_DIR
# and /metrics sums them, so one scrape reports the whole host. prometheus_client reads the
# variable when it is first imported, so it is set here, before anything imports the app. Without
# one from the environment, a folder per master process under the temp dir (removed on exit).
# Either way its files are wiped on start: counts left by an earlier run would be added in.
# It is this gunicorn's alone: the RQ workers keep their counts in Redis, not here.
DEFAULT_METRICS_DIR = os.path.join(tempfile.gettempdir(), f"mediahook-metrics-{os.getpid()}")
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", DEFAULT_METRICS_DIR)

bind = os.environ.get("MEDIAHOOK_BIND", "127.0.0.1:8000")

# The hot path is ~0.1 ms of CPU plus one Redis round trip: one sync worker per core keeps
# the cores busy without the GIL contention of threads. Vendors and nginx send one callback
# per connection, so keep-alive (which sync workers lack) buys little.
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = os.environ.get("MEDIAHOOK_WORKER_CLASS", "sync")
threads = int(os.environ.get("MEDIAHOOK_THREADS", "1"))

# A callback is answered in milliseconds; anything slower is stuck (Redis timeouts are ~2 s).
timeout = 30
graceful_timeout = 30
keepalive = 5
backlog = 2048

# Request line and header limits; the body limit is max_body_bytes in the app config.
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# Each worker builds its own app (and Redis pool, spool drainer thread): never preload, or
# the Redis connections and the drainer thread would be shared across forks.
preload_app = False

# Logs: gunicorn's own lines and the access log in mediahook's format ([logging] format: JSON
# lines by default), see MediahookLogger below. The access log is off unless MEDIAHOOK_ACCESS_LOG
# names a file or "-" (stdout): it costs a log line per callback.
accesslog = os.environ.get("MEDIAHOOK_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("MEDIAHOOK_LOG_LEVEL", "info")


class MediahookLogger(Logger):
    """gunicorn's error and access logs through app.core.logs' formatter. The access line is built
    from the request's parts, never from the raw request line: the query string keeps its
    parameter names but not the values of secret ones (token, hwSecret)."""

    def setup(self, cfg):
        super().setup(cfg)
        from app.core import logs
        from app.core.config import ConfigError, load

        try:
            settings = load()
        except (ConfigError, OSError):  # on_starting reports it and stops; log in the defaults until then
            from app.core.config import build

            settings = build({}, env={})
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False):
                    handler.setFormatter(logs.formatter(settings, "web"))

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        from app.core import logs

        try:
            fields = logs.access_fields(environ, str(getattr(resp, "status", "")).split(None, 1)[0],
                                        getattr(resp, "sent", None), request_time.total_seconds())
            self.access_log.info("%s %s %s %sms", fields["method"], fields["path"], fields["status"],
                                 fields["duration_ms"], extra=fields)
        except Exception:
            self.exception("access log line failed")


logger_class = MediahookLogger


def on_starting(server):
    """Refuse to start on a bad config, with the message that names the key; prepare the
    metrics folder."""
    from app.core.config import ConfigError, load

    try:
        load()
    except ConfigError as exc:
        print(f"mediahook: {exc}", file=sys.stderr)
        sys.exit(2)
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))
    server.log.info("metrics: PROMETHEUS_MULTIPROC_DIR=%s", path)


def child_exit(server, worker):
    """A worker's counters stay (they are totals); its live gauges, if any, go."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == DEFAULT_METRICS_DIR:
        shutil.rmtree(DEFAULT_METRICS_DIR, ignore_errors=True)


# gunicorn 27's runtime control socket defaults to one path per user: several gunicorns on a
# host (web + bench + tests) would fight over it. mediahook does not use it.
control_socket_disable = True

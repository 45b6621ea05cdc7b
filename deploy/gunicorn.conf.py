"""gunicorn settings for mediahook's web side (Procfile, `mediahook dev`, bench/ingest.py).

Every value can be overridden on the command line or by the environment variables named here.
"""

import multiprocessing
import os
import sys

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

accesslog = os.environ.get("MEDIAHOOK_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("MEDIAHOOK_LOG_LEVEL", "info")


def on_starting(server):
    """Refuse to start on a bad config, with the message that names the key."""
    from app.settings import ConfigError, load

    try:
        load()
    except ConfigError as exc:
        print(f"mediahook: {exc}", file=sys.stderr)
        sys.exit(2)


# gunicorn 27's runtime control socket defaults to one path per user: several gunicorns on a
# host (web + bench + tests) would fight over it. mediahook does not use it.
control_socket_disable = True

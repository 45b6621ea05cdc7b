"""Shared pieces of the worker-side tests: what the simulators saw, their faults,
callback bodies, config files for worker processes, and real `mediahook worker` processes.

Not a test module and not a conftest: the test files import what they use.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
from redis import Redis
from rq import Worker

from bench.pipeline import descendants
from tests.helpers import CDN_TOKEN, live_event, signed_path, wait_until

ROOT = Path(__file__).resolve().parent.parent
UPLOAD = f"/hooks/cdnetworks/vod-upload?token={CDN_TOKEN}"
TEMPLATE_IDS = {"360": 1, "480": 2, "720": 3, "1080": 4, "original": 5}


# --- the simulators -----------------------------------------------------------------------

def sim_calls(sim_url: str, vendor: str, endpoint: str | None = None) -> list[dict]:
    params = {"vendor": vendor, **({"endpoint": endpoint} if endpoint else {})}
    r = requests.get(f"{sim_url}/_sim/calls", params=params, timeout=5)
    r.raise_for_status()
    return r.json()["calls"]


def sim_tasks(sim_url: str) -> list[dict]:
    """Every Muducloud task the simulator holds (deleted and failed ones included)."""
    tasks, page = [], 1
    while True:
        r = requests.get(f"{sim_url}/transcoding/api/get-transcodes", params={"page": page, "limit": 100}, timeout=5)
        body = r.json()
        tasks += body["results"]
        if len(tasks) >= body["count"] or not body["results"]:
            return tasks
        page += 1


def set_faults(sim_url: str, faults: dict, seed: int | None = None) -> None:
    """Replace the simulator's fault config ({} clears it); re-arms every ``*_times`` counter."""
    r = requests.put(f"{sim_url}/_sim/faults", json={**faults, **({"seed": seed} if seed is not None else {})},
                     timeout=5)
    assert r.status_code == 200, r.text


def converter(sim_url: str, converter_id: str) -> dict:
    r = requests.get(f"{sim_url}/_sim/flighthub/converters/{converter_id}", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def converters(sim_url: str) -> list[dict]:
    r = requests.get(f"{sim_url}/openapi/v0.1/live-stream/converter", timeout=5,
                     headers={"X-User-Token": "sim-flighthub-token",
                              "X-Request-Id": "00000000-0000-4000-8000-000000000000"})
    return r.json()["data"]["members"]


def koophone_instance(sim_url: str, instance_id: str) -> dict | None:
    r = requests.get(f"{sim_url}/_sim/koophone/instances/{instance_id}", timeout=5)
    return r.json() if r.status_code == 200 else None


def applied_rates(settings: dict) -> set[tuple[int, int, int]]:
    """The distinct (540P, 720P, 1080P) code rates in a KooPhone instance's applied settings."""
    return {tuple(g[d]["code_rate"] for d in ("definition_540P", "definition_720P", "definition_1080P"))
            for s in settings["instance_settings"] for g in s["video_spec_groups"]}


# --- callback bodies ----------------------------------------------------------------------

def upload_body(*videos: tuple, transcode_state: str = "5") -> bytes:
    """A CDNetworks upload callback for (videoId, source height or None[, transcodeState]) tuples."""
    infos = []
    for video_id, height, *state in videos:
        info: dict[str, Any] = {"videoId": video_id, "publishDomain": "vod.example.com", "encrypt": 0,
                                "transcodeState": state[0] if state else transcode_state,
                                "videoName": f"name-{video_id}"}
        if height is not None:
            info["videoResolutions"] = [{"clarity": 1, "height": height, "width": height * 16 // 9}]
        infos.append(info)
    return json.dumps({"code": 200, "data": {"videoListInfo": infos, "videoTotal": len(infos)},
                       "message": "success"}).encode()


def origin(video_id: str) -> str:
    return f"https://vod.example.com/{video_id}.mp4"


def stream_event(room_id: str, state: str, job_id: str = "job-1", output_url: str = "rtmp://live.example.com/app",
                 **extra: Any) -> bytes:
    return live_event("RTMP_STREAM_STATE_CHANGE", room_id=room_id, job_id=job_id, output_url=output_url,
                      stream_key="secret-stream-key", state=state, **extra)


def post_live(client, body: bytes) -> str:
    """POST a signed live event through the Flask test client; returns the event id."""
    r = client.post(signed_path(), data=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json["event_id"]


def post_signed(client, body: bytes, sent_at: float) -> str:
    """POST a live event MetaStudio signed (MSS_A) at ``sent_at``; returns the new event's id."""
    r = client.post(signed_path(now=sent_at), data=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    assert not r.json.get("duplicate"), r.json
    return r.json["event_id"]


# --- config files -------------------------------------------------------------------------

def _key(key: str) -> str:
    return key if key and all(c.isalnum() or c in "_-" for c in key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items() if v is not None) + "}"
    raise TypeError(f"no TOML for {value!r}")


def toml_dumps(doc: dict, prefix: str = "") -> str:
    """TOML for a config dict, lists of tables included (as inline tables), which
    tests.helpers.to_toml does not write."""
    scalars, tables = [], []
    for key, value in doc.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif value is not None:
            scalars.append(f"{_key(key)} = {_value(value)}")
    out = "\n".join(scalars) + "\n"
    for key, value in tables:
        name = f"{prefix}.{_key(key)}" if prefix else _key(key)
        out += f"\n[{name}]\n" + toml_dumps(value, name)
    return out


# --- real worker processes ----------------------------------------------------------------

def _exited(pid: int) -> bool:
    """Gone, or a zombie (exited, its files closed, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _redis_ports(pids: list[int], redis_port: int) -> set[int]:
    """The local ports of the TCP connections these processes hold to ``redis_port`` (from /proc)."""
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == redis_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


class WorkerProcess:
    """`python -m app.cli worker` (RQ worker + scheduler) in its own process group, so that
    the work horse and the scheduler it forks can be killed with it."""

    def __init__(self, config: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAHOOK_") and k != "REDIS_URL"}
        env["MEDIAHOOK_CONFIG"] = str(config)
        self.log = log
        self.redis: Redis | None = None  # set by wait_registered; kill() asks it to drop our connections
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], cwd=ROOT, env=env,
                                     stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_registered(self, redis: Redis, timeout: float = 20) -> None:
        self.redis = redis
        def up() -> bool:
            assert self.proc.poll() is None, f"worker exited:\n{self.output()}"
            # `mediahook worker` is a pool: its job processes register, each under its own pid.
            return any(w.pid in (self.pid, *self.descendants()) for w in Worker.all(connection=redis))

        wait_until(up, timeout=timeout, interval=0.05, what="the worker to register")

    def descendants(self) -> list[int]:
        """Every process this worker started, however deep (from /proc)."""
        return [p for p in descendants(self.pid) if p != self.pid]

    def kill(self) -> None:
        """SIGKILL to the worker and everything it started, at once. RQ's work horse calls
        setpgrp(), so killing the worker's process group alone would leave the horse running
        (and finishing the job): it is killed by its own id."""
        others = self.descendants()
        redis = self.redis
        ports = _redis_ports([self.pid, *others], redis.connection_pool.connection_kwargs["port"]) if redis else set()
        os.killpg(self.pid, signal.SIGKILL)
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)
        # Until every one of them has exited (its sockets closed): a job process still dying while
        # blocked on the queue could otherwise be handed the next job by Redis, which is then lost.
        wait_until(lambda: all(_exited(pid) for pid in others), timeout=10, interval=0.01,
                   what="the killed worker processes to exit")
        # Exited is not enough: until Redis has read the closed socket of a job process that died
        # blocked in BLPOP, it may still hand that dead client the next job (lost with it).
        if redis is not None and ports:
            wait_until(lambda: not any(int(c["addr"].rsplit(":", 1)[1]) in ports for c in redis.client_list()),
                       timeout=10, interval=0.01, what="Redis to drop the killed worker's connections")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.pid, signal.SIGTERM)  # warm shutdown: the worker lets its horse finish
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()


class Workers:
    """Starts worker processes on a config file of ``base_config`` + vendor sections; stops them all."""

    def __init__(self, base_config: dict, tmp_path: Path) -> None:
        self.base_config = base_config
        self.tmp_path = tmp_path
        self.started: list[WorkerProcess] = []

    def config(self, **sections: Any) -> Path:
        path = self.tmp_path / "worker.toml"
        path.write_text(toml_dumps({**self.base_config, **sections}))
        return path

    def start(self, redis: Redis, **sections: Any) -> WorkerProcess:
        worker = WorkerProcess(self.config(**sections), self.tmp_path / f"worker-{len(self.started)}.log")
        self.started.append(worker)
        worker.wait_registered(redis)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()

"""Metrics: /metrics after callbacks of every outcome, the figures read from Redis and the
spool at scrape time, the workers' counters (kept in Redis), and gunicorn's multiprocess mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.core import counters
from app.web import metrics
from tests.helpers import CDN_TOKEN, fixture_bytes, free_port, live_event, signed_path, wait_until
from tests.vendor_harness import set_faults, upload_body
from workers import actions, ops, transcode
from workers.context import settings as worker_settings

UPLOAD = f"/hooks/cdnetworks/vod-upload?token={CDN_TOKEN}"


def scrape(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a /metrics answer: (name, labels) -> value."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def get_metrics(client) -> dict:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return scrape(r.get_data(as_text=True))


# --- callbacks, through the test client ---------------------------------------------------

def test_every_outcome_is_counted_by_source_type_and_status(make_app):
    client = make_app(max_body_bytes=4096).test_client()
    switch, path = fixture_bytes("metastudio", "shoot_script_switch.json"), signed_path()
    assert client.post(path, data=switch).status_code == 200
    assert client.post(path, data=switch).json["duplicate"] is True  # the same signed request again
    for n in range(3):  # free-form types of events we do not handle: one label, "other"
        assert client.post(signed_path(), data=live_event(f"NEW_TYPE_{n}", room_id="r")).json["ignored"] is True
    bad = fixture_bytes("metastudio", "rtmp_stream_state_change.missing_fields.json")
    assert client.post(signed_path(), data=bad).status_code == 400
    assert client.post("/hooks/metastudio/live-events?hwSecret=00&hwTime=1", data=switch).status_code == 401
    assert client.get("/hooks/metastudio/live-events").status_code == 405
    bad_upload = fixture_bytes("cdnetworks", "vod_upload.missing_and_bad_fields.json")
    assert client.post(UPLOAD, data=bad_upload).status_code == 400
    assert client.post(UPLOAD, data=b"x" * 5000).status_code == 413
    assert client.post(UPLOAD, data=b"not json at all").status_code == 415
    assert client.post("/hooks/cdnetworks/vod-upload?token=wrong", data=b"{}").status_code == 401
    assert client.post("/hooks/cdnetworks/vod-transcode?token=" + CDN_TOKEN,
                       data=fixture_bytes("cdnetworks", "vod_transcode.json")).status_code == 200

    m = get_metrics(client)
    name = "mediahook_callbacks_total"
    assert total(m, name, source="metastudio", type="SHOOT_SCRIPT_SWITCH", outcome="accepted", status="200") == 1
    assert total(m, name, source="metastudio", type="SHOOT_SCRIPT_SWITCH", outcome="duplicate", status="200") == 1
    assert total(m, name, source="metastudio", type="other", outcome="ignored", status="200") == 3
    for status in ("400", "401", "405"):
        assert total(m, name, source="metastudio", type="unparsed", outcome="rejected", status=status) == 1
    for status in ("400", "413", "415"):
        assert total(m, name, source="cdnetworks", type="unparsed", outcome="rejected", status=status) == 1
    assert total(m, name, source="cdnetworks", outcome="rejected", status="401") == 1
    assert total(m, name, source="cdnetworks", type="VOD_TRANSCODE", outcome="accepted", status="200") == 1
    # No free-form type became a label value.
    types = {dict(labels)["type"] for (n, labels) in m if n == name}
    assert types <= {"SHOOT_SCRIPT_SWITCH", "RTMP_STREAM_STATE_CHANGE", "REPLY_COMMAND_FINISH", "VOD_UPLOAD",
                     "VOD_TRANSCODE", "other", "unparsed"}, types
    # Every callback answer was timed, per source.
    for source in ("metastudio", "cdnetworks"):
        assert total(m, "mediahook_callback_seconds_count", source=source) == total(m, name, source=source)
        assert total(m, "mediahook_callback_seconds_sum", source=source) > 0
    # Other paths are not callbacks.
    client.get("/healthz")
    assert total(get_metrics(client), name) == total(m, name)


def test_a_counting_failure_never_fails_the_callback(app, client, redis_client, monkeypatch):
    def broken(*_args):
        raise FileNotFoundError("the metrics folder is gone")

    counting = app.wsgi_app
    while not isinstance(counting, metrics.CallbackMetrics):  # other WSGI wrappers may sit around it
        counting = counting.wsgi_app
    monkeypatch.setattr(counting, "_record", broken)
    for state in ("CONNECTED", "END"):
        body = live_event("RTMP_STREAM_STATE_CHANGE", room_id="r1", job_id="j", output_url="rtmp://x/y",
                          stream_key="sk", state=state)
        r = client.post(signed_path(), data=body)
        assert r.status_code == 200
        assert redis_client.exists(f"mh:event:{r.json['event_id']}")


@pytest.fixture
def down_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


def test_spooled_and_503_and_a_scrape_while_redis_is_down(make_app, down_redis_url):
    app = make_app(redis={"url": down_redis_url, "connect_timeout": 0.2, "socket_timeout": 0.5})
    client = app.test_client()
    body = fixture_bytes("metastudio", "rtmp_stream_state_change.json")
    assert client.post(signed_path(), data=body).status_code == 200

    m = get_metrics(client)  # answers, with what it can read
    assert total(m, "mediahook_callbacks_total", source="metastudio", type="RTMP_STREAM_STATE_CHANGE",
                 outcome="spooled", status="200") == 1
    assert total(m, "mediahook_spool_depth") == 1
    assert total(m, "mediahook_redis_up") == 0
    assert not [n for (n, _) in m if n.startswith("mediahook_queue_")]

    spool_dir = app.extensions["mediahook"].settings.spool_dir
    for name in os.listdir(spool_dir):
        os.unlink(os.path.join(spool_dir, name))
    os.rmdir(spool_dir)
    Path(spool_dir).write_text("a file where the folder should be")  # every spool write fails
    assert client.post(signed_path(), data=body.replace(b"CONNECTED", b"END")).status_code == 503
    m = get_metrics(client)
    assert total(m, "mediahook_callbacks_total", type="RTMP_STREAM_STATE_CHANGE", outcome="unavailable",
                 status="503") == 1
    assert total(m, "mediahook_spool_depth") == 0


def test_queue_depth_and_oldest_job_age_come_from_redis(client, redis_client):
    for state in ("CONNECTED", "END"):
        body = live_event("RTMP_STREAM_STATE_CHANGE", room_id="r1", job_id="j", output_url="rtmp://x/y",
                          stream_key="sk", state=state)
        assert client.post(signed_path(), data=body).status_code == 200
    head = redis_client.lindex("rq:queue:mediahook-events", 0).decode()
    redis_client.hset(f"rq:job:{head}", "enqueued_at",
                      time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - 90)))
    redis_client.zadd(actions.FAILED_INDEX, {"koophone-x-0-0": time.time()})

    m = get_metrics(client)
    assert total(m, "mediahook_redis_up") == 1
    assert total(m, "mediahook_queue_depth", queue="mediahook-events") == 2
    assert total(m, "mediahook_queue_depth", queue="mediahook-actions") == 0
    assert 90 <= total(m, "mediahook_queue_oldest_seconds", queue="mediahook-events") < 120
    assert total(m, "mediahook_queue_oldest_seconds", queue="mediahook-actions") == 0
    assert total(m, "mediahook_actions_failed") == 1
    assert total(m, "mediahook_rq_workers") == 0


# --- the workers' figures (counted in Redis, read by any web process) ---------------------------

def test_actions_retries_failures_and_vendor_calls_are_counted(vendor_app, sim, drive, redis_client):
    client = vendor_app.test_client()
    set_faults(sim.url, {"muducloud": {"create-transcode": {"error_times": 1}}})
    client.post(UPLOAD, data=upload_body(("VMETRIC", 720)))  # 360, 480, 720: one create fails once
    drive(lambda: {s.get("state") for s in transcode.video_transcodes(redis_client, "VMETRIC").values()}
          == {"success"} and len(transcode.video_transcodes(redis_client, "VMETRIC")) == 3,
          what="three transcodes to succeed")
    set_faults(sim.url, {"koophone": {"vendor_errors": [
        {"times": 1, "code": "KOOPHONE.API.1002", "message": "instances are not in the same region"}]}})
    [apply_id] = ops.koophone_apply(redis_client, worker_settings(), "low", ["m1"])
    drive(lambda: (actions.record(redis_client, apply_id) or {}).get("status") == "failed", what="the apply to fail")

    m = get_metrics(client)
    a = "mediahook_actions_total"
    assert total(m, a, vendor="muducloud", kind="transcode.submit", outcome="succeeded") == 3
    assert total(m, a, vendor="muducloud", kind="transcode.submit", outcome="retrying") == 1
    assert total(m, a, vendor="muducloud", kind="transcode.poll", outcome="succeeded") >= 3
    assert total(m, a, vendor="koophone", kind="video_settings.apply", outcome="failed") == 1
    assert total(m, a, outcome="skipped") == 0
    assert total(m, "mediahook_action_retries_total", vendor="muducloud", kind="transcode.submit") == 1
    reasons = {dict(ls)["reason"] for (n, ls) in m if n == "mediahook_action_retries_total"}
    assert reasons <= {"rate_limited", "server_error", "network", "vendor_error", "unexpected"}
    assert total(m, "mediahook_actions_failed") == 1

    calls = "mediahook_vendor_calls_total"
    assert total(m, calls, vendor="muducloud", result="5xx") == 1
    assert total(m, calls, vendor="muducloud", result="2xx") >= 3 + 3  # creates, then polls
    assert total(m, calls, vendor="koophone") == 1
    for vendor in ("muducloud", "koophone"):
        h = "mediahook_vendor_call_seconds"
        count = total(m, h + "_count", vendor=vendor)
        assert count == total(m, calls, vendor=vendor)
        assert total(m, h + "_bucket", vendor=vendor, le="+Inf") == count
        assert 0 < total(m, h + "_sum", vendor=vendor) < 30 * count
        buckets = sorted((float(dict(ls)["le"]), v) for (n, ls), v in m.items()
                         if n == h + "_bucket" and dict(ls)["vendor"] == vendor)
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert total(m, "mediahook_queue_depth") == 0


def test_a_metrics_write_never_fails_the_action(redis_server):
    """Counting goes to Redis; if that write fails, the action's own outcome stands."""
    from redis import Redis

    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    counters.count_action(dead, "video_settings.apply", "koophone", "succeeded")
    counters.observe_vendor_call(dead, "koophone", 0.1, "2xx")


# --- gunicorn: several workers, one scrape ----------------------------------------------------

def _worker_pids(master: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return pids


def _post_many(base: str, n: int) -> None:
    def one(i: int) -> int:
        body = live_event("RTMP_STREAM_STATE_CHANGE", room_id=f"room-{i}-{time.monotonic_ns()}", job_id="j",
                          output_url="rtmp://x/y", stream_key="sk", state="CONNECTED")
        path = signed_path(host=base.removeprefix("http://"))
        # A new connection each: the kernel hands them to whichever worker accepts first.
        return requests.post(base + path, data=body, headers={"Connection": "close"}, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(n))) == {200}


def _scrape(base: str) -> dict:
    r = requests.get(base + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    return scrape(r.text)


@pytest.fixture
def gunicorn_proc(gunicorn_process):
    """gunicorn_proc(env) -> (base URL, Popen, log path): a real gunicorn (2 workers)."""

    def start(env: dict | None = None):
        g = gunicorn_process(env)
        return g.base, g.proc, g.log

    return start


def test_one_scrape_reports_every_gunicorn_worker_even_a_dead_one(gunicorn_proc, tmp_path, redis_client):
    prom = tmp_path / "prom"
    base, proc, _ = gunicorn_proc({"PROMETHEUS_MULTIPROC_DIR": str(prom)})
    # The kernel may hand every connection to one worker; pausing each in turn makes both count.
    wait_until(lambda: len(_worker_pids(proc.pid)) == 2, timeout=20, what="both gunicorn workers")
    first, second = _worker_pids(proc.pid)
    for paused in (first, second):
        os.kill(paused, signal.SIGSTOP)
        try:
            _post_many(base, 20)
        finally:
            os.kill(paused, signal.SIGCONT)
    assert len(list(prom.glob("counter_*.db"))) == 2  # both workers took callbacks
    m = _scrape(base)
    assert total(m, "mediahook_callbacks_total", outcome="accepted") == 40
    assert total(m, "mediahook_callback_seconds_count", source="metastudio") == 40
    assert total(m, "mediahook_queue_depth", queue="mediahook-events") == 40

    # A worker killed outright: gunicorn starts another; what the dead one counted still counts.
    victim = _worker_pids(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in _worker_pids(proc.pid) and len(_worker_pids(proc.pid)) == 2,
               timeout=20, what="gunicorn to replace the killed worker")
    _post_many(base, 10)
    m = _scrape(base)
    assert total(m, "mediahook_callbacks_total", outcome="accepted") == 50
    assert total(m, "mediahook_callback_seconds_count") == 50


def test_gunicorn_makes_cleans_and_removes_its_metrics_folder(gunicorn_proc, tmp_path):
    # A folder given in the environment is wiped of an earlier run's counts on start.
    prom = tmp_path / "given"
    prom.mkdir()
    subprocess.run([sys.executable, "-c", "from prometheus_client import Counter; Counter('mediahook_callbacks', "
                    "'x', ['source', 'type', 'outcome', 'status']).labels('metastudio', 'X', 'accepted', '200')"
                    ".inc(7)"], env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prom)}, check=True)
    assert list(prom.glob("counter_*.db"))
    base, proc, _ = gunicorn_proc({"PROMETHEUS_MULTIPROC_DIR": str(prom)})
    assert total(_scrape(base), "mediahook_callbacks_total") == 0
    proc.terminate()
    proc.wait(15)
    assert prom.is_dir()  # given, so kept

    # Without one, gunicorn makes its own under the temp dir, and removes it on exit.
    base, proc, log = gunicorn_proc()
    _post_many(base, 2)
    line = next(line for line in log.read_text().splitlines() if "PROMETHEUS_MULTIPROC_DIR=" in line)
    made = Path(line.split("PROMETHEUS_MULTIPROC_DIR=", 1)[1].split('"', 1)[0])
    assert made.name == f"mediahook-metrics-{proc.pid}" and list(made.glob("*.db"))
    assert total(_scrape(base), "mediahook_callbacks_total", outcome="accepted") == 2
    proc.terminate()
    proc.wait(15)
    assert not made.exists()


# --- build, process and spool-disk figures ----------------------------------------------------

def test_build_info_and_this_process_figures(client):
    import platform
    from importlib import metadata

    m = get_metrics(client)
    info = [dict(ls) for (n, ls), v in m.items() if n == "mediahook_build_info" and v == 1]
    assert info == [{"version": metadata.version("mediahook"), "python": platform.python_version()}]
    pid = str(os.getpid())
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                 "process_max_fds", "process_start_time_seconds"):
        assert total(m, name, pid=pid) > 0, name
    assert {dict(ls)["pid"] for (n, ls) in m if n.startswith("process_")} == {pid}


def test_spool_filesystem_space_is_reported(app, client):
    spool_dir = app.extensions["mediahook"].settings.spool_dir
    fs = os.statvfs(spool_dir)
    m = get_metrics(client)
    size = total(m, "mediahook_spool_filesystem_size_bytes")
    avail = total(m, "mediahook_spool_filesystem_avail_bytes")
    assert size == fs.f_blocks * fs.f_frsize
    assert 0 < avail <= size
    assert abs(avail - fs.f_bavail * fs.f_frsize) < 64 * 1024 * 1024  # other tests write meanwhile


def test_gunicorn_reports_every_process_of_the_host_by_pid(gunicorn_proc, tmp_path):
    """Whichever worker answers the scrape, the same processes are reported: master and workers."""
    base, proc, _ = gunicorn_proc({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")})
    wait_until(lambda: len(_worker_pids(proc.pid)) == 2, timeout=20, what="two gunicorn workers")
    expected = {str(p) for p in (proc.pid, *_worker_pids(proc.pid))}
    for _ in range(6):  # new connections: different workers answer
        m = _scrape(base)
        assert {dict(ls)["pid"] for (n, ls) in m if n == "process_resident_memory_bytes"} == expected
        assert all(total(m, "process_cpu_seconds_total", pid=p) >= 0 for p in expected)
        assert total(m, "mediahook_build_info") == 1

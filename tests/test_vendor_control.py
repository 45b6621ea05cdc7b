"""Vendor controls with real Redis, real `mediahook worker` processes and the simulators: a paused
vendor gets no call and loses no action, resume sends the held actions in order; the outbound
rate limit holds across worker processes; the admin API and the CLI drive both."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from rq.job import Job, JobStatus

from tests.conftest import _merge, vendor_sections
from tests.helpers import wait_until
from tests.vendor_harness import ROOT, sim_calls, toml_dumps
from workers import actions, ops, sweep, vendor_control, vendor_rate

AUTH = {"Authorization": "Bearer " + "a" * 32}


def _status(redis, action_id: str) -> str | None:
    return (actions.record(redis, action_id) or {}).get("status")


def _instances_called(sim_url: str) -> list[str]:
    """The instance ids of each KooPhone PUT the simulator saw, in the order it saw them."""
    calls = sorted(sim_calls(sim_url, "koophone"), key=lambda c: c["seq"])
    return [",".join(c["body"]["instance_ids"]) for c in calls]


def test_a_paused_vendor_gets_no_call_and_resume_sends_every_held_action_in_order(
        redis_client, sim, settings_factory, start_worker):
    sections = vendor_sections(sim.url)
    settings = settings_factory(**sections)
    worker = start_worker(sections, processes=1)  # one job at a time: the run order is the call order
    vendor_control.pause(redis_client, "koophone", by="test", reason="vendor incident")

    queued = [ops.koophone_apply(redis_client, settings, "low" if n % 2 else "normal", [f"phone-{n}"])[0]
              for n in range(6)]

    wait_until(lambda: all(_status(redis_client, a) == "held" for a in queued), timeout=30,
               what="every action held")
    held = [i.decode() for i in redis_client.lrange(vendor_control.HELD_PREFIX + "koophone", 0, -1)]
    assert held == queued  # held once each, in the order they came up
    assert sim_calls(sim.url, "koophone") == []  # no call while paused
    for action_id in queued:
        job = Job.fetch(actions.job_id(action_id), connection=redis_client)
        assert job.get_status() == JobStatus.SCHEDULED  # kept by RQ, not failed
        assert actions.record(redis_client, action_id)["attempts"] == 0  # a hold is not an attempt
    assert ops.failed_items(redis_client) == []  # nothing listed as failed
    report = sweep.sweep(redis_client, full=True, grace=0, settle=0)  # the sweep leaves held work alone
    assert (report.actions_requeued, report.actions_failed) == ([], [])
    state = vendor_control.status(redis_client, "koophone")
    assert state["paused"] and state["held"] == 6 and state["reason"] == "vendor incident"
    assert worker.proc.poll() is None

    result = vendor_control.resume(redis_client, "koophone")
    assert result["released"] == queued and not result["paused"]
    wait_until(lambda: all(_status(redis_client, a) == "succeeded" for a in queued), timeout=30,
               what="every held action to run after the resume")
    assert _instances_called(sim.url) == [f"phone-{n}" for n in range(6)]  # sent in the order they were held
    for action_id in queued:
        job = Job.fetch(actions.job_id(action_id), connection=redis_client)
        assert job.retries_left == settings.koophone.http.retry_attempts  # its own budget back
        assert actions.record(redis_client, action_id)["attempts"] == 1
    assert vendor_control.status(redis_client, "koophone")["held"] == 0


def test_other_vendors_run_while_one_is_paused(redis_client, sim, settings_factory, start_worker):
    sections = vendor_sections(sim.url)
    settings = settings_factory(**sections)
    start_worker(sections, processes=1)
    vendor_control.pause(redis_client, "flighthub")
    [action_id] = ops.koophone_apply(redis_client, settings, "low", ["phone-9"])
    wait_until(lambda: _status(redis_client, action_id) == "succeeded", timeout=30, what="the KooPhone apply")
    assert len(sim_calls(sim.url, "koophone")) == 1


def test_rate_limit_holds_across_two_worker_processes(redis_client, sim, settings_factory, start_worker):
    sections = vendor_sections(sim.url)
    sections["koophone"]["rate_limit_per_second"] = 5
    settings = settings_factory(**sections)
    assert settings.koophone.http.rate_limit_per_second == 5
    start_worker(sections, processes=2)
    start_worker(sections, processes=2)
    queued = [ops.koophone_apply(redis_client, settings, "low", [f"phone-{n}"])[0] for n in range(16)]
    wait_until(lambda: all(_status(redis_client, a) == "succeeded" for a in queued), timeout=60,
               what="16 rate-limited applies")
    times = sorted(c["time"] for c in sim_calls(sim.url, "koophone"))
    assert len(times) == 16
    tolerance = 0.05  # the simulator's clock reads arrival, a few ms after the slot on Redis's clock
    for n in range(len(times) - 5):
        assert times[n + 5] - times[n] >= 1.0 - tolerance, f"6 calls within {times[n + 5] - times[n]:.3f} s"
    assert times[-1] - times[0] >= (16 - 1) / 5 - tolerance


def test_slots_are_spaced_on_redis_time_and_never_busy_wait(redis_client):
    waits = [vendor_rate.take_slot(redis_client, "muducloud", 10) for _ in range(5)]
    # Back to back: each call gets the next slot, 0.1 s after the one before.
    assert waits[0] == pytest.approx(0, abs=0.02)
    for before, after in zip(waits, waits[1:], strict=False):
        assert after - before == pytest.approx(0.1, abs=0.02)


def test_the_admin_api_pauses_resumes_and_audits(make_app, sim, redis_client):
    app = make_app(admin={"token": "a" * 32}, **vendor_sections(sim.url))
    client = app.test_client()
    r = client.post("/api/vendors/flighthub/pause", json={"reason": "incident 42"}, headers=AUTH)
    assert r.status_code == 200 and r.json["paused"] and r.json["reason"] == "incident 42"
    r = client.get("/api/vendors", headers=AUTH)
    by_name = {v["vendor"]: v for v in r.json["items"]}
    assert by_name["flighthub"]["paused"] and not by_name["koophone"]["paused"]
    assert set(by_name) == set(vendor_control.VENDORS)
    r = client.post("/api/vendors/flighthub/resume", headers=AUTH)
    assert r.status_code == 200 and not r.json["paused"] and r.json["released"] == []
    assert client.post("/api/vendors/nobody/pause", headers=AUTH).status_code == 404
    assert client.post("/api/vendors/flighthub/pause").status_code == 401
    entries = [e for e in redis_client.lrange("mh:audit", 0, -1)]
    assert any(b"vendor.pause" in e for e in entries) and any(b"vendor.resume" in e for e in entries)


def test_the_cli_pauses_shows_and_resumes(base_config, tmp_path, sim, redis_client):
    config = tmp_path / "cli.toml"
    config.write_text(toml_dumps(_merge(base_config, vendor_sections(sim.url))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAHOOK_") and k != "REDIS_URL"}
    env["MEDIAHOOK_CONFIG"] = str(config)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "app.cli", "vendor", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    done = run("pause", "muducloud", "--reason", "maintenance")
    assert done.returncode == 0, done.stderr
    assert "muducloud paused" in done.stdout
    assert vendor_control.status(redis_client, "muducloud")["paused"]
    done = run("status")
    assert done.returncode == 0 and "PAUSED" in done.stdout and "maintenance" in done.stdout
    done = run("resume", "muducloud")
    assert done.returncode == 0 and "muducloud resumed: 0 held" in done.stdout
    assert not vendor_control.status(redis_client, "muducloud")["paused"]
    assert run("pause", "nobody").returncode == 2

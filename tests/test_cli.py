"""The `mediahook` operator commands: the same output over the admin API (MEDIAHOOK_URL, a real
gunicorn) as on the host (local mode, the API in-process against Redis); --json is the API's
document; errors are one line and a non-zero exit; the stream key never on the command line;
the dev setup found wherever its data dir is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from app.cli.main import main as cli
from tests.conftest import ROOM, ROOT, vendor_sections
from tests.helpers import CDN_TOKEN, fixture_bytes, free_port, live_event, signed_path, wait_until
from tests.vendor_harness import set_faults, sim_calls, stream_event, toml_dumps
from workers import actions, ops

TOKEN = "test-admin-token-cli-0123456789"
VIDEO = "9B0F7BA8BCB9D056D4C24ADDBF821D10"  # the first video of the documented upload callback
LIVE_JOB = "job-cli-1"
STREAM_KEY = "cli-very-secret-stream-key"
CLEAN = {"MEDIAHOOK_URL": None, "MEDIAHOOK_ADMIN_TOKEN": None, "MEDIAHOOK_CONFIG": None, "REDIS_URL": None,
         "MEDIAHOOK_DEV_DIR": None, "MEDIAHOOK_STREAM_KEY": None, "MEDIAHOOK_CLI_CONFIG": None}


def _final(redis, event_id: str) -> bool:
    doc = ops.event_details(redis, event_id) or {}
    states = [a["status"] for a in doc.get("action_states", [])]
    rungs = [r for video in (doc.get("transcodes") or {}).values() for r in video.values()]
    return (doc.get("status") == "processed" and all(s in ("succeeded", "failed", "skipped") for s in states)
            and all(r.get("state") in ("success", "failed", "deleted", "timed_out") for r in rungs))


@pytest.fixture
def world(make_app, sim, drive, redis_client, gunicorn_process, base_config, tmp_path):
    """Events, actions, transcodes and one failure in Redis; a real gunicorn serving the API; the
    environments of both modes (each with nothing of the other)."""
    public = f"http://127.0.0.1:{free_port()}"  # what signatures name (nothing listens there)
    sections = {"admin": {"token": TOKEN}, "public_base_url": public, **vendor_sections(sim.url)}
    config = tmp_path / "cli-test.toml"
    config.write_text(toml_dumps({**base_config, **sections}))
    api = gunicorn_process(env={"MEDIAHOOK_CONFIG": str(config)})
    app = make_app(**sections)
    client = app.test_client()
    upload = client.post(f"/hooks/cdnetworks/vod-upload?token={CDN_TOKEN}",
                         data=fixture_bytes("cdnetworks", "vod_upload.json")).json["event_id"]
    r = client.post(signed_path(host=public.split("//")[1]), data=stream_event(ROOM, "CONNECTED", job_id=LIVE_JOB))
    assert r.status_code == 200, r.text
    connected = r.json["event_id"]
    switch = live_event("SHOOT_SCRIPT_SWITCH", room_id=ROOM, job_id=LIVE_JOB, scene_script_name="Product 1",
                        shoot_script_sequence_no="2", shoot_script_title="Paragraph 2")
    r = client.post(signed_path(host=public.split("//")[1]), data=switch)
    assert r.status_code == 200, r.text
    switched = r.json["event_id"]
    assert client.post("/hooks/cdnetworks/vod-upload?token=wrong-token", data=b"{}").status_code == 401
    drive(lambda: _final(redis_client, upload) and _final(redis_client, connected), timeout=60,
          what="the events to settle")
    # The vendor refuses the next call: the on-demand apply queued now, once nothing else is left.
    set_faults(sim.url, {"koophone": {"vendor_errors": [
        {"times": 1, "code": "KOOPHONE.API.1002", "message": "instances are not in the same region"}]}})
    [failed_id] = ops.koophone_apply(redis_client, ops_settings(), "low", ["r1"])
    drive(lambda: actions.record(redis_client, failed_id)["status"] == "failed", what="the apply to fail")
    empty = tmp_path / "xdg"  # no cli.toml, no dev state of the machine's user
    common = {**CLEAN, "XDG_CONFIG_HOME": str(empty), "XDG_STATE_HOME": str(empty)}
    return {"upload": upload, "connected": connected, "failed": failed_id, "api": api.base, "sim": sim,
            "public": public, "switched": switched,
            "local": {**common, "MEDIAHOOK_CONFIG": str(config)},
            "remote": {**common, "MEDIAHOOK_URL": api.base, "MEDIAHOOK_ADMIN_TOKEN": TOKEN},
            "redis": redis_client, "drive": drive}


def ops_settings():
    from workers.context import settings

    return settings()


def run(env: dict, *args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


def api_get(world: dict, path: str, **params) -> dict:
    r = requests.get(world["api"] + path, params=params, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_every_read_command_prints_the_same_in_both_modes_and_json_is_the_api_document(world):
    up, connected, failed_id = world["upload"], world["connected"], world["failed"]
    commands = {
        ("events", "show", up): f"/api/events/{up}",
        ("events", "show", connected): f"/api/events/{connected}",
        ("events", "list"): "/api/events",
        ("events", "list", "--source", "metastudio", "--limit", "1"): ("/api/events", {"source": "metastudio",
                                                                                       "limit": 1}),
        ("events", "list", "--video", VIDEO): ("/api/events", {"video_id": VIDEO}),
        ("events", "list", "--room", ROOM, "--status", "processed", "--since", "1h"): None,
        ("failed",): "/api/failed",
        ("failed", "--vendor", "koophone"): ("/api/failed", {"vendor": "koophone"}),
        ("failed", "--event", connected): ("/api/failed", {"event_id": connected}),
        ("transcodes", VIDEO): ("/api/transcodes", {"video_id": VIDEO}),
        ("action", failed_id): f"/api/actions/{failed_id}",
        ("live", "show", LIVE_JOB): f"/api/live/jobs/{LIVE_JOB}",
        ("streams",): "/api/streams",
        ("rejected", "--limit", "5"): ("/api/rejected", {"limit": 5}),
    }
    wait_until(lambda: api_get(world, "/api/rejected")["items"], what="the refused callback to be kept")
    for args, api_path in commands.items():
        for extra in ((), ("--json",)):
            local = run(world["local"], *args, *extra)
            remote = run(world["remote"], *args, *extra)
            assert local.exit_code == remote.exit_code == 0, (args, local.output, remote.output)
            assert local.stdout == remote.stdout, args
            if extra and api_path:
                path, params = api_path if isinstance(api_path, tuple) else (api_path, {})
                assert json.loads(remote.stdout) == api_get(world, path, **params), args

    # For people: local times, units, aligned columns, the failure's time and vendor error.
    shown = run(world["remote"], "failed").stdout
    [header, row] = shown.splitlines()[:2]
    assert header.split()[:3] == ["FAILED", "AT", "ID"] and row.index(failed_id) == header.index("ID")
    assert "koophone KOOPHONE.API.1002: instances are not in the same region" in row
    failed_at = api_get(world, "/api/failed")["items"][0]["failed_at"]
    from app.cli.format import local_time

    assert row.startswith(local_time(failed_at))
    rungs = run(world["remote"], "transcodes", VIDEO).stdout
    assert "100%" in rungs and "success" in rungs and "1.0" not in rungs
    event = run(world["local"], "events", "show", up).stdout
    assert "received_at:" in event and "179" not in event.split("received_at:")[1].splitlines()[0]


def test_errors_are_one_line_and_the_same_in_both_modes(world):
    for args in (("events", "show", "nope"), ("action", "nope"), ("live", "show", "nope"),
                 ("koophone", "apply", "nope", "p-1"), ("events", "list", "--since", "yesterday")):
        local, remote = run(world["local"], *args), run(world["remote"], *args)
        assert local.exit_code == remote.exit_code == 1, (args, local.output)
        assert local.output == remote.output and len(local.output.strip().splitlines()) == 1, local.output
    assert "since: Not a valid datetime" in local.output
    not_a_start = [run(world[mode], "live", "start-again", world["failed"], "--yes") for mode in ("local", "remote")]
    assert not_a_start[0].output == not_a_start[1].output and "not a live start" in not_a_start[0].output
    assert {r.exit_code for r in not_a_start} == {1}


def cli_process(env: dict, *args: str, cwd: Path = ROOT, input: str | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in CLEAN and k != "MEDIAHOOK_CONFIG"}
    full.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=full, cwd=cwd, input=input,
                          capture_output=True, text=True, timeout=60)


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode != 0 and not done.stdout, done
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


def test_unreachable_api_bad_token_and_unreachable_redis_are_one_clear_line(write_config, tmp_path):
    xdg = {"XDG_CONFIG_HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path)}
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(cli_process({**xdg, "MEDIAHOOK_URL": nowhere, "MEDIAHOOK_ADMIN_TOKEN": TOKEN}, "failed"),
                          "cannot reach the mediahook API at " + nowhere)
    assert_one_line_error(cli_process({**xdg, "MEDIAHOOK_URL": nowhere}, "failed"), "no admin token")
    assert_one_line_error(cli_process({**xdg, "MEDIAHOOK_URL": "ftp://x", "MEDIAHOOK_ADMIN_TOKEN": TOKEN},
                                      "failed"), "not an http(s):// URL")
    dead_redis = write_config(redis={"url": f"redis://127.0.0.1:{free_port()}/0"})
    assert_one_line_error(cli_process({**xdg, "MEDIAHOOK_CONFIG": str(dead_redis)}, "events", "list"),
                          "cannot reach Redis at redis://127.0.0.1:", "Connection refused")


def test_a_bad_token_is_one_line(gunicorn_process, redis_client, tmp_path):
    api = gunicorn_process(admin={"token": TOKEN})
    xdg = {"XDG_CONFIG_HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path)}
    done = cli_process({**xdg, "MEDIAHOOK_URL": api.base, "MEDIAHOOK_ADMIN_TOKEN": "wrong-token-0123456789"},
                       "events", "list")
    assert_one_line_error(done, "refused the token (401)")
    tls = cli_process({**xdg, "MEDIAHOOK_URL": api.base.replace("http:", "https:"), "MEDIAHOOK_ADMIN_TOKEN": TOKEN},
                      "events", "list")
    assert_one_line_error(tls, "TLS failed")
    for url in (api.base + "/", api.base + "/api/"):  # a trailing slash, the API's prefix: both taken
        ok = cli_process({**xdg, "MEDIAHOOK_URL": url, "MEDIAHOOK_ADMIN_TOKEN": TOKEN}, "events", "list")
        assert ok.returncode == 0 and ok.stdout == "no events\n", ok.stderr


def test_cli_toml_gives_url_and_token_and_must_not_be_readable_by_others(gunicorn_process, redis_client, tmp_path):
    api = gunicorn_process(admin={"token": TOKEN})
    config = tmp_path / "mediahook" / "cli.toml"
    config.parent.mkdir()
    config.write_text(f'url = "{api.base}"\ntoken = "{TOKEN}"\n')
    config.chmod(0o644)
    xdg = {"XDG_CONFIG_HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path)}
    assert_one_line_error(cli_process(xdg, "failed"), "others may read it", "chmod 600")
    config.chmod(0o600)
    done = cli_process(xdg, "failed", "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == {"items": [], "total": 0}, done.stderr
    config.write_text(f'url = "{api.base}"\ntoken = "{TOKEN}"\nsecret = 1\n')
    assert_one_line_error(cli_process(xdg, "failed"), "unknown key 'secret'")


def test_tail_prints_new_events_and_ends_cleanly_on_ctrl_c(world, tmp_path):
    from app.sources.metastudio import signed_url
    from tests.helpers import MS_KEY

    out = tmp_path / "tail.out"
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env.update({k: v for k, v in world["remote"].items() if v is not None})
    with open(out, "w") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "events", "tail", "--last", "1", "--interval",
                                 "0.2", "--source", "metastudio"], env=env, cwd=ROOT, stdout=stdout,
                                stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: world["switched"] in out.read_text(), timeout=20, what="the last event first")
        fresh = []
        for state in ("RECONNECTING", "END"):
            url = signed_url(world["public"] + "/hooks/metastudio/live-events", MS_KEY)
            r = requests.post(world["api"] + url[len(world["public"]):], timeout=10,
                              data=stream_event(ROOM, state, job_id=LIVE_JOB))
            assert r.status_code == 200, r.text
            fresh.append(r.json()["event_id"])
        requests.post(f"{world['api']}/hooks/cdnetworks/vod-upload?token={CDN_TOKEN}", timeout=10,
                      data=fixture_bytes("cdnetworks", "vod_upload.json").replace(b"testUser", b"other"))
        wait_until(lambda: all(e in out.read_text() for e in fresh), timeout=20, what="the new events")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and "Traceback" not in err, err
    lines = out.read_text().splitlines()
    assert lines[0].split()[:2] == ["RECEIVED", "ID"]
    ids = [line.split()[2] for line in lines[1:]]  # date, time, id
    assert ids == [world["switched"], *fresh]  # oldest first, each once, the upload filtered out

    # --json: one API event document a line, the same as GET /api/events lists.
    with open(out, "w") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "events", "tail", "--json", "--last", "2",
                                 "--source", "metastudio"], env=env, cwd=ROOT, stdout=stdout, text=True)
    try:
        wait_until(lambda: len(out.read_text().splitlines()) == 2, timeout=20, what="two JSON lines")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    listed = api_get(world, "/api/events", source="metastudio", limit=2)["events"]
    assert [json.loads(line) for line in out.read_text().splitlines()] == listed[::-1]


def test_live_start_takes_the_key_from_stdin_a_file_or_the_environment(world, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(STREAM_KEY + "\n")
    ways = [(["--stream-key-stdin"], {}, STREAM_KEY + "\n"), (["--stream-key", "-"], {}, STREAM_KEY + "\n"),
            (["--stream-key-file", str(key_file)], {}, None), ([], {"MEDIAHOOK_STREAM_KEY": STREAM_KEY}, None)]
    started = []
    for mode in ("local", "remote"):
        for flags, env, stdin in ways:
            args = ["live", "start", ROOM, "--output-url", "rtmp://live.example.com/app", *flags]
            assert STREAM_KEY not in " ".join(args)
            done = cli_process({**world[mode], **env}, *args, input=stdin)
            assert done.returncode == 0, done.stderr
            assert STREAM_KEY not in done.stdout + done.stderr and done.stderr == ""
            started.append(done.stdout.split()[1].rstrip(";"))
    redis = world["redis"]
    world["drive"](lambda: all(actions.record(redis, a)["status"] == "succeeded" for a in started),
                   what="the starts")
    calls = sim_calls(world["sim"].url, "metastudio", "start-job")
    assert len(calls) == len(started) and all(STREAM_KEY in json.dumps(c) for c in calls)

    warned = cli_process(world["remote"], "live", "start", ROOM, "--output-url", "rtmp://live.example.com/app",
                         "--stream-key", STREAM_KEY)
    assert warned.returncode == 0 and "visible in `ps`" in warned.stderr
    assert_one_line_error(cli_process(world["remote"], "live", "start", ROOM, "--output-url", "rtmp://x.example/a"),
                          "no stream key")
    assert_one_line_error(cli_process(world["remote"], "live", "start", ROOM, "--output-url", "rtmp://x.example/a",
                                      "--stream-key-file", str(tmp_path / "missing")), "cannot read")
    assert_one_line_error(cli_process(world["remote"], "live", "start", ROOM, "--output-url", "rtmp://x.example/a",
                                      "--stream-key-stdin", "--stream-key-file", str(key_file)), "one way")


def test_mutations_answer_alike_in_both_modes(world):
    for mode in ("local", "remote"):
        replayed = run(world[mode], "replay", world["connected"])
        assert replayed.exit_code == 0 and replayed.stdout.startswith(f"queued event-{world['connected']}-replay-")
        as_json = json.loads(run(world[mode], "replay", world["connected"], "--json").stdout)
        assert as_json["event_id"] == world["connected"] and "-replay-" in as_json["job_id"]
        applied = run(world[mode], "koophone", "apply", "low", "p-1", "p-2")
        assert applied.exit_code == 0 and applied.stdout.startswith("queued koophone-manual-")
    requeued = run(world["remote"], "failed", "--requeue")
    assert requeued.exit_code == 0 and "requeued 1, skipped 0" in requeued.stdout, requeued.output
    audit = api_get(world, "/api/audit")["items"]
    assert {"cli:" in e["who"] for e in audit} == {True, False}  # local actions are audited too
    shown = [run(world[mode], "audit") for mode in ("local", "remote")]
    assert shown[0].stdout == shown[1].stdout and "koophone.apply" in shown[0].stdout
    assert shown[0].stdout.splitlines()[0].split() == ["AT", "WHO", "ACTION", "VIA", "DETAIL"]


def test_overview_from_either_mode(world):
    docs = [json.loads(run(world[mode], "overview", "--json").stdout) for mode in ("local", "remote")]
    assert docs[0].keys() == docs[1].keys() and docs[0]["redis_up"] is docs[1]["redis_up"] is True
    assert docs[0]["failed"] == docs[1]["failed"] == 1
    shown = run(world["remote"], "overview").stdout
    assert "Redis up" in shown and "failed 1" in shown and "mediahook-events" in shown


def _dev_file(data_dir: Path, config: Path, redis_url: str, pid: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "dev.json").write_text(json.dumps({"pid": pid, "data_dir": str(data_dir), "env": {
        "MEDIAHOOK_CONFIG": str(config), "REDIS_URL": redis_url, "MEDIAHOOK_PUBLIC_BASE_URL": "http://127.0.0.1:1",
        "MEDIAHOOK_SPOOL_DIR": str(data_dir / "spool")}}))


def test_a_stale_dev_json_is_one_line_and_the_notice_is_printed_once(write_config, redis_server, tmp_path):
    config = write_config()
    here = tmp_path / "project"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _dev_file(here / "var", config, redis_server.url, gone.pid)
    xdg = {"XDG_CONFIG_HOME": str(tmp_path / "c"), "XDG_STATE_HOME": str(tmp_path / "s")}
    assert_one_line_error(cli_process(xdg, "failed", cwd=here), "var/dev.json is stale", str(gone.pid))

    _dev_file(here / "var", config, redis_server.url, os.getpid())
    done = cli_process(xdg, "replay", "0123abcd", cwd=here)  # loads the settings more than once before
    assert done.stderr.count("(using the running dev setup") == 1, done.stderr
    assert "no event 0123abcd" in done.stderr and done.returncode == 1


def test_dev_with_a_data_dir_is_found_from_anywhere(tmp_path, redis_server, redis_client):
    """A real `mediahook dev --data-dir X`: the other commands find it from another folder (by the
    per-user state file) or by MEDIAHOOK_DEV_DIR, and its files go when it stops."""
    state, data = tmp_path / "state", tmp_path / "somewhere" / "data"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"XDG_CONFIG_HOME": str(tmp_path / "c"), "XDG_STATE_HOME": str(state), "REDIS_URL": redis_server.url}
    full = {k: v for k, v in os.environ.items() if k not in CLEAN}
    full.update(env)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "dev", "--port", str(port), "--data-dir", str(data),
                             "--no-simulators"], env=full, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (data / "dev.json").exists() and (state / "mediahook" / "dev.json").exists(),
                   timeout=30, what="dev to write its files")
        plain = {k: v for k, v in env.items() if k != "REDIS_URL"}
        found = cli_process(plain, "events", "list", cwd=elsewhere)
        assert found.returncode == 0 and found.stdout == "no events\n", found.stderr
        assert f"(using the running dev setup: {state / 'mediahook' / 'dev.json'})" in found.stderr
        by_env = cli_process({**plain, "MEDIAHOOK_DEV_DIR": str(data)}, "failed", cwd=elsewhere)
        assert by_env.returncode == 0 and by_env.stdout == "nothing failed\n", by_env.stderr
        missing = cli_process({**plain, "MEDIAHOOK_DEV_DIR": str(elsewhere)}, "failed", cwd=elsewhere)
        assert_one_line_error(missing, "MEDIAHOOK_DEV_DIR=", "no dev.json there")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert not (data / "dev.json").exists() and not (state / "mediahook" / "dev.json").exists()


def test_version():
    from importlib import metadata

    done = run({}, "--version")
    assert done.exit_code == 0 and done.stdout == f"mediahook, version {metadata.version('mediahook')}\n"


def test_check_config_and_sign_have_json_too(write_config):
    env = {**CLEAN, "MEDIAHOOK_CONFIG": str(write_config())}
    config = json.loads(run(env, "check-config", "--json").stdout)
    assert config["metastudio"] == "MSS_A" and config["cdnetworks"] is True and "@" not in config["redis"]
    signed = json.loads(run(env, "sign", "http://h.example/hooks/metastudio/live-events", "--json").stdout)
    assert "hwSecret=" in signed["url"] and "hwTime=" in signed["url"]
    heads = json.loads(run(env, "sign", "http://h.example/x", "--headers", "--json").stdout)
    assert set(heads["headers"]) == {"x-hw-mss-secret", "x-hw-mss-time"} and heads["url"] == "http://h.example/x"


def test_demo_says_what_it_waits_for():
    from app.cli.demo import _wait

    calls, said = iter([(0, 3), (1, 3), (1, 3), (2, 3), (3, 3)]), []
    assert _wait("the transcodes", lambda: next(calls), timeout=30, progress=said.append)
    assert said and said[0].startswith("waiting for the transcodes: 1 of 3 done (1 s)")
    assert not _wait("nothing", lambda: (0, 0), timeout=0.6, progress=said.append)

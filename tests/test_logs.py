"""Logs: one JSON object per line with the event and action ids, plain text on request,
secrets masked wherever they would appear (messages, extra fields, tracebacks, the access log)."""

from __future__ import annotations

import json
import logging
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from rq.logutils import ColorizingStreamHandler, setup_loghandlers

from app.core import logs
from app.core.logs import MASK
from tests.conftest import ROOM, vendor_sections
from tests.helpers import CDN_TOKEN, MS_KEY, signed_path, wait_until
from tests.vendor_harness import UPLOAD, Workers, post_live, set_faults, stream_event, upload_body
from workers import actions, live, transcode

STREAM_KEY = "e2e-very-secret-stream-key"


def json_lines(text: str) -> list[dict]:
    """Every non-blank line must be one JSON object."""
    docs = []
    for line in text.splitlines():
        if line.strip():
            try:
                docs.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON line: {line!r}") from None
    return docs


@pytest.fixture
def emit(settings_factory):
    """emit(fmt, ...) configures logging in the given format and returns a logger to write with."""

    def make(fmt: str = "json", component: str = "web", **overrides) -> logging.Logger:
        logs.configure(settings_factory(logging={"format": fmt}, **overrides), component)
        return logging.getLogger("mediahook.test")

    return make


# --- the format -------------------------------------------------------------------------------

def test_a_json_line_has_the_ids_in_context_and_the_extra_fields(emit, capsys):
    log = emit()
    with logs.context(event_id="1a1f0000000aaaaaaaaaaaa"):
        with logs.context(action_id="koophone-x-0-0"):
            log.info("applied %s", "low", extra={"instances": 2})
        log.warning("between actions")
    log.error("outside")
    [inner, between, outside] = json_lines(capsys.readouterr().err)
    assert inner["message"] == "applied low" and inner["level"] == "INFO" and inner["component"] == "web"
    assert (inner["event_id"], inner["action_id"], inner["instances"]) == ("1a1f0000000aaaaaaaaaaaa",
                                                                          "koophone-x-0-0", 2)
    assert inner["logger"] == "mediahook.test" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", inner["ts"])
    assert between["event_id"] == "1a1f0000000aaaaaaaaaaaa" and "action_id" not in between
    assert "event_id" not in outside and "action_id" not in outside


def test_text_format_gives_plain_lines(emit, capsys):
    log = emit("text")
    with logs.context(event_id="e1", action_id="a1"):
        log.warning("retrying with token=abc123")
    err = capsys.readouterr().err
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z WARNING web mediahook\.test: retrying with token=\*\*\* "
                        r"\[event_id=e1 action_id=a1\]\n", err), err


def test_secrets_are_masked_in_messages_extras_tracebacks_and_by_value(emit, capsys):
    log = emit(admin={"token": "admin-token-0123456789"})
    log.info("GET /hooks/cdnetworks/vod-upload?token=%s&x=1", CDN_TOKEN)
    log.info("signed ?hwSecret=abcdef0123&hwTime=65a1b2c3")
    log.info('body {"message": "{\\"stream_key\\":\\"%s\\",\\"room_id\\":\\"r\\"}"}', STREAM_KEY)
    log.info("headers %s", {"X-User-Token": "tok-1", "Authorization": "Bearer abc.def.ghi"})
    log.info("redis at redis://:p4ssw0rd@10.0.0.1:6379/0")
    log.info("the key itself: %s, and the admin token: admin-token-0123456789", MS_KEY)
    log.error("job failed", extra={"kwargs": {"stream_key": STREAM_KEY, "room_id": "r"}, "auth_token": "t0k"})
    try:
        raise RuntimeError(f"vendor said no to stream_key={STREAM_KEY}")
    except RuntimeError:
        log.exception("unexpected")
    out = capsys.readouterr().err
    for secret in (CDN_TOKEN, "abcdef0123", STREAM_KEY, "tok-1", "abc.def.ghi", "p4ssw0rd", MS_KEY,
                   "admin-token-0123456789", "t0k"):
        assert secret not in out, secret
    docs = json_lines(out)
    assert docs[0]["message"] == f"GET /hooks/cdnetworks/vod-upload?token={MASK}&x=1"
    assert docs[1]["message"] == f"signed ?hwSecret={MASK}&hwTime=65a1b2c3"  # what is not secret stays
    assert docs[6]["kwargs"] == {"stream_key": MASK, "room_id": "r"} and docs[6]["auth_token"] == MASK
    assert "RuntimeError" in docs[7]["exc"] and MASK in docs[7]["exc"]


def test_access_fields_mask_the_query_and_name_the_event():
    from app.web.receive import CALLBACK_KEY

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/hooks/metastudio/live-events",
               "QUERY_STRING": "a=1&hwSecret=deadbeef&hwTime=65a1b2c3&token=t", "REMOTE_ADDR": "10.0.0.9",
               "HTTP_X_REQUEST_ID": "req-7", CALLBACK_KEY: ("1a1f", "RTMP_STREAM_STATE_CHANGE", "accepted")}
    fields = logs.access_fields(environ, "200", 62, 0.0042)
    assert fields == {"method": "POST", "path": "/hooks/metastudio/live-events", "status": 200, "duration_ms": 4.2,
                      "bytes": 62, "remote_addr": "10.0.0.9", "query": "a=1&hwSecret=***&hwTime=65a1b2c3&token=***",
                      "request_id": "req-7", "event_id": "1a1f", "event_type": "RTMP_STREAM_STATE_CHANGE",
                      "outcome": "accepted"}


def test_configure_replaces_its_handler_and_takes_rq_loggers_over(emit, capsys):
    stray = ColorizingStreamHandler()
    logging.getLogger("rq.scheduler").addHandler(stray)  # as RQ does when it finds no handler
    logging.getLogger("rq.scheduler").propagate = False
    emit(component="worker")
    emit(component="worker")
    assert len([h for h in logging.getLogger().handlers if getattr(h, "_mediahook", False)]) == 1
    assert stray not in logging.getLogger("rq.scheduler").handlers
    assert logging.getLogger("rq.scheduler").propagate
    setup_loghandlers("WARNING", name="rq.worker")  # what Worker.work() calls: finds our handler, adds none
    assert not logging.getLogger("rq.worker").handlers
    logging.getLogger("rq.worker").info("Job OK")  # RQ's per-job INFO lines are quieted
    logging.getLogger("rq.worker").warning("Worker started")
    logging.getLogger("rq.scheduler").warning("Scheduler started")
    worker, scheduler = json_lines(capsys.readouterr().err)
    assert (worker["component"], scheduler["component"]) == ("worker", "scheduler")


# --- the workers, in process --------------------------------------------------------------------

def test_worker_lines_carry_the_event_and_action_ids(vendor_app, sim, drive, redis_client, capsys):
    set_faults(sim.url, {"koophone": {"error_times": 1}})
    event_id = post_live(vendor_app.test_client(), stream_event(ROOM, "CONNECTED"))
    apply_id = f"koophone-{event_id}-0-0"
    drive(lambda: (actions.record(redis_client, apply_id) or {}).get("status") == "succeeded",
          what="the apply to succeed after its retry")
    docs = json_lines(capsys.readouterr().err)
    processed = [d for d in docs if d["logger"] == "workers.process"]
    assert processed and all(d["event_id"] == event_id for d in processed), processed
    lines = [d for d in docs if d["logger"] == "workers.actions"]
    assert lines and all(d["event_id"] == event_id and d["action_id"] for d in lines), lines
    retried = [d for d in lines if d["action_id"] == apply_id]
    assert "will retry" in retried[0]["message"] and retried[0]["level"] == "WARNING"
    assert "succeeded" in retried[-1]["message"] and retried[-1]["level"] == "INFO"
    # Outside a job, no stale ids (contexts are reset when each job ends).
    logging.getLogger("mediahook.test").info("after")
    [after] = json_lines(capsys.readouterr().err)
    assert "event_id" not in after and "action_id" not in after


# --- a real run: gunicorn with its access log, a real `mediahook worker`, secrets everywhere ---------

@pytest.fixture
def workers(base_config, tmp_path):
    started = Workers(base_config, tmp_path)
    yield started
    started.stop_all()


def test_a_real_run_logs_json_lines_and_never_a_secret(gunicorn_server, workers, sim, settings_factory, redis_client,
                                                       tmp_path):
    debug = {"logging": {"level": "DEBUG"}}  # the most there is to leak
    base = gunicorn_server(env={"MEDIAHOOK_ACCESS_LOG": "-"}, **debug)
    sections = vendor_sections(sim.url)
    sections["metastudio"]["auth_token"] = "metastudio-wrong-token"  # live.start fails for good: RQ logs its kwargs
    worker = workers.start(redis_client, public_base_url=base, **debug, **sections)

    upload = requests.post(base + UPLOAD, data=upload_body(("VLOG", 360)), timeout=10).json()["event_id"]
    signed = signed_path(host=base.removeprefix("http://"))
    hw_secret = parse_qs(urlsplit(signed).query)["hwSecret"][0]
    body = stream_event(ROOM, "CONNECTED").replace(b"secret-stream-key", STREAM_KEY.encode())
    live_event = requests.post(base + signed, data=body, timeout=10).json()["event_id"]
    start_id = live.queue_start(redis_client, settings_factory(public_base_url=base, **sections), ROOM,
                              "rtmp://live.example.com/app", STREAM_KEY)

    def done() -> bool:
        rungs = transcode.video_transcodes(redis_client, "VLOG")
        return (rungs.get("360", {}).get("state") == "success"
                and (actions.record(redis_client, start_id) or {}).get("status") == "failed"
                and all(redis_client.hget(f"mh:event:{e}", "status") == b"processed" for e in (upload, live_event)))

    try:
        wait_until(done, timeout=60, interval=0.1, what="the upload, the stream event and the live start")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{worker.output()}") from None
    worker.stop()

    web_log = next(tmp_path.glob("gunicorn-*.log")).read_text()
    worker_log = worker.log.read_text()
    secrets = (CDN_TOKEN, MS_KEY, hw_secret, STREAM_KEY, "secret-stream-key", "sim-flighthub-token",
               "sim-koophone-token", "metastudio-wrong-token")
    for name, text in (("web", web_log), ("worker", worker_log)):
        for secret in secrets:
            assert secret not in text, f"{secret!r} in the {name} log"
    web, work = json_lines(web_log), json_lines(worker_log)

    access = [d for d in web if d["logger"] == "gunicorn.access" and d["path"].startswith("/hooks/")]
    assert {(d["event_id"], d["query"]) for d in access} == {(upload, f"token={MASK}"),
                                                             (live_event, f"hwSecret={MASK}&hwTime=" +
                                                              parse_qs(urlsplit(signed).query)["hwTime"][0])}
    assert {d["component"] for d in web} == {"web"}

    assert {"worker", "scheduler"} <= {d["component"] for d in work}
    assert any(d.get("event_id") == upload and d["logger"] == "workers.process" for d in work)
    assert any(d.get("event_id") == live_event and d["logger"] == "workers.process" for d in work)
    failed = [d for d in work if d.get("action_id") == start_id and d["logger"] == "workers.actions"]
    assert failed and "FAILED" in failed[0]["message"] and failed[0]["level"] == "ERROR"
    # A vendor's refusal is one line (ours): RQ's ERROR line with a traceback is not repeated.
    assert not [d for d in work if d["logger"] == "rq.worker" and d.get("job_id") == start_id
                and d["level"] == "ERROR"]

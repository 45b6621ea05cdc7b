"""The vendor clients against the simulators over real HTTP: what is transient (worth a retry)
and what is permanent (fail at once, keep the vendor's code and message), per vendor."""

from __future__ import annotations

import dataclasses
import time
import uuid
from email.utils import formatdate
from types import SimpleNamespace

import pytest

from app.core.vendor_config import FlightHubSchema, KooPhoneSchema, MetaStudioApiSchema, TranscoderSchema
from tests.conftest import vendor_sections
from tests.helpers import free_port, wait_until
from tests.vendor_harness import applied_rates, koophone_instance, set_faults, sim_calls
from workers.clients import flighthub, koophone, metastudio, muducloud
from workers.clients.http import VendorError, _retry_after

READ_TIMEOUT = 0.3


@pytest.fixture
def cfg(sim):
    """Client configs for every vendor, pointed at the simulators; no retries here (the
    clients make one call; retrying is the actions' business)."""
    sections = vendor_sections(sim.url)
    http = {"read_timeout": READ_TIMEOUT, "connect_timeout": 1.0}
    return SimpleNamespace(
        transcoder=TranscoderSchema().load({**sections["transcoder"], **http}),
        flighthub=FlightHubSchema().load({**sections["flighthub"], **http}),
        koophone=KooPhoneSchema().load({**sections["koophone"], **http}),
        metastudio=MetaStudioApiSchema().load({**sections["metastudio"], **http}),
    )


CALLS = {
    "muducloud": ("create-transcode", lambda c: muducloud.create(c.transcoder, "https://v.example.com/a.mp4", 1)),
    "flighthub": ("list", lambda c: flighthub.list_converters(c.flighthub)),
    "koophone": ("video-setting",
                 lambda c: koophone.apply_video_settings(c.koophone, ["p1"], c.koophone.profiles["low"])),
    "metastudio": ("start-job", lambda c: metastudio.start_job(c.metastudio, "room-1", {})),
}
INTERNAL_ERROR = {"muducloud": 1500, "flighthub": 500, "koophone": "KOOPHONE.API.9999", "metastudio": "MSS.00000004"}
THROTTLED = {"muducloud": 1429, "flighthub": 429, "koophone": "APIGW.0308", "metastudio": "APIGW.0308"}


def _fail(call, c) -> VendorError:
    with pytest.raises(VendorError) as info:
        call(c)
    return info.value


@pytest.mark.parametrize("vendor", sorted(CALLS))
def test_transient_failures_of_every_kind(vendor, sim, cfg):
    """5xx, 429 (with its Retry-After), a timeout and a dropped connection are all transient;
    the call works again once the fault is gone."""
    endpoint, call = CALLS[vendor]

    set_faults(sim.url, {vendor: {endpoint: {"error_times": 1}}})
    err = _fail(call, cfg)
    assert (err.transient, err.status, err.code, err.vendor) == (True, 500, INTERNAL_ERROR[vendor], vendor)
    assert not err.maybe_done  # an answer came: the vendor says what happened

    set_faults(sim.url, {vendor: {endpoint: {"times_429": 1, "retry_after_s": 2}}})
    err = _fail(call, cfg)
    assert (err.transient, err.status, err.retry_after, err.code) == (True, 429, 2.0, THROTTLED[vendor])
    assert not err.maybe_done

    set_faults(sim.url, {vendor: {endpoint: {"timeout_times": 1, "timeout_sleep_s": READ_TIMEOUT + 0.4}}})
    started = time.monotonic()
    err = _fail(call, cfg)
    assert err.transient and err.status is None and "timed out" in err.message
    assert err.maybe_done  # sent, no answer: the vendor may have done it
    assert time.monotonic() - started < READ_TIMEOUT + 0.35  # gave up at the read timeout

    set_faults(sim.url, {vendor: {endpoint: {"drop_times": 1}}})
    err = _fail(call, cfg)
    assert err.transient and err.status is None and "connection failed" in err.message
    assert err.maybe_done

    call(cfg)  # faults used up: the same call succeeds
    calls = wait_until(lambda: [c for c in sim_calls(sim.url, vendor, endpoint) if not c["pending"]] == (
        got := sim_calls(sim.url, vendor, endpoint)) and got, what="the timed-out call to end in the simulator")
    kinds = [(c["fault"] or {}).get("kind") for c in calls]
    assert kinds == ["error", "429", "timeout", "drop", None]


@pytest.mark.parametrize("vendor", sorted(CALLS))
def test_a_5xx_carries_its_retry_after_for_every_vendor(vendor, sim, cfg):
    """The vendor's own error body on a 503 goes through its client's error reading, which
    must keep the answer's Retry-After as a 429's is kept; a plain 5xx has none."""
    endpoint, call = CALLS[vendor]
    set_faults(sim.url, {vendor: {endpoint: {"error_times": 1, "error_status": 503, "retry_after_s": 4}}})
    err = _fail(call, cfg)
    assert (err.transient, err.status, err.retry_after, err.code) == (True, 503, 4.0, INTERNAL_ERROR[vendor])
    assert not err.maybe_done  # a 503: the request was not taken
    [answered] = sim_calls(sim.url, vendor, endpoint)
    assert answered["answer"]["headers"]["Retry-After"] == "4"

    set_faults(sim.url, {vendor: {endpoint: {"error_times": 1, "error_status": 500}}})
    assert _fail(call, cfg).retry_after is None


@pytest.mark.parametrize("status", [502, 504])
@pytest.mark.parametrize("vendor", sorted(CALLS))
def test_gateway_errors_may_have_been_done(vendor, status, sim, cfg):
    """A 502/504 comes from a gateway after the request went on: the vendor may have acted."""
    endpoint, call = CALLS[vendor]
    set_faults(sim.url, {vendor: {endpoint: {"error_times": 1, "error_status": status}}})
    err = _fail(call, cfg)
    assert (err.transient, err.status, err.maybe_done) == (True, status, True)


def test_refused_connection_is_transient_and_certainly_not_done(cfg):
    down = dataclasses.replace(cfg.koophone, base_url=f"http://127.0.0.1:{free_port()}")
    err = _fail(lambda c: koophone.apply_video_settings(down, ["p1"], c.koophone.profiles["low"]), cfg)
    assert err.transient and not err.maybe_done and "connection failed" in err.message


@pytest.mark.parametrize("vendor, code, status", [
    ("koophone", "KOOPHONE.API.9999", 400),      # internal error, whatever the HTTP status
    ("metastudio", "MSS.00000004", 400),
    ("flighthub", 212062, 200),                  # push timeout: a stream-side hiccup
    ("flighthub", 212058, 200),
])
def test_vendor_internal_error_codes_are_transient(vendor, code, status, sim, cfg):
    endpoint, call = CALLS[vendor]
    set_faults(sim.url, {vendor: {endpoint: {"vendor_errors": [
        {"times": 1, "code": code, "message": "try again later", "status": status}]}}})
    err = _fail(call, cfg)
    assert (err.transient, err.code, err.message, err.status) == (True, code, "try again later", status)


def test_permanent_errors_keep_the_vendors_code_and_message(sim, cfg):
    # FlightHub: a converter that does not exist (213029), a name already taken (213025).
    err = _fail(lambda c: flighthub.set_auto_push(c.flighthub, str(uuid.uuid4()), True), cfg)
    assert (err.transient, err.code, err.message) == (False, 213029, "converter not found")
    flighthub.create(cfg.flighthub, "cam-1", "SN1", "39-0-7", "rtmp://push.example.com/a")
    err = _fail(lambda c: flighthub.create(c.flighthub, "cam-1", "SN1", "39-0-7", "rtmp://push.example.com/b"), cfg)
    assert (err.transient, err.code) == (False, flighthub.ALREADY_EXISTS)

    # KooPhone: a bad parameter (an instance id over 32 characters), a bad token.
    err = _fail(lambda c: koophone.apply_video_settings(c.koophone, ["x" * 33], c.koophone.profiles["low"]), cfg)
    assert (err.transient, err.code, err.status) == (False, "KOOPHONE.API.1000", 400)
    assert "instance_ids[0]" in err.message
    wrong = dataclasses.replace(cfg.koophone, auth_token="wrong")
    err = _fail(lambda c: koophone.apply_video_settings(wrong, ["p1"], c.koophone.profiles["low"]), cfg)
    assert (err.transient, err.code, err.status) == (False, "KOOPHONE.API.1001", 401)
    set_faults(sim.url, {"koophone": {"vendor_errors": [
        {"times": 1, "code": "KOOPHONE.API.1002", "message": "instances are not in the same region"}]}})
    err = _fail(CALLS["koophone"][1], cfg)
    assert (err.transient, err.code) == (False, "KOOPHONE.API.1002")
    assert err.message == "instances are not in the same region"

    # Muducloud: errcode != 1000 with HTTP 200.
    err = _fail(lambda c: muducloud.create(c.transcoder, "ftp://v.example.com/a.mp4", 1), cfg)
    assert (err.transient, err.code, err.message) == (False, 1001, "origin_url must be an http(s) or rtmp URL")
    err = _fail(lambda c: muducloud.get(c.transcoder, "nosuchid"), cfg)
    assert (err.transient, err.code) == (False, 1004)

    # MetaStudio: a bad token, a bad body.
    err = _fail(lambda c: metastudio.start_job(dataclasses.replace(c.metastudio, auth_token="x"), "r", {}), cfg)
    assert (err.transient, err.code, err.status) == (False, "MSS.00000001", 401)
    err = _fail(lambda c: metastudio.start_job(c.metastudio, "r", {"live_event_callback_config": {
        "live_event_type_callback_url": "https://example.com/h", "callback_event_type": ["NOPE"]}}), cfg)
    assert (err.transient, err.code, err.status) == (False, "MSS.00000003", 400)


def test_koophone_sends_all_six_combinations_the_simulator_accepts(sim, cfg):
    profile = cfg.koophone.profiles["normal"]
    koophone.apply_video_settings(cfg.koophone, ["phone-a", "phone-b"], profile)
    applied = koophone_instance(sim.url, "phone-b")
    combos = {(s["network_type"], s["encoding_type"]) for s in applied["instance_settings"]}
    assert combos == {(n, e) for n in ("MOBILE_NETWORK", "WIFI", "WIRED") for e in ("H264", "H265")}
    assert applied_rates(applied) == {(2000, 4000, 8000)}
    assert koophone.batches([f"i{n}" for n in range(250)] + ["i0"]) == [
        [f"i{n}" for n in range(0, 100)], [f"i{n}" for n in range(100, 200)], [f"i{n}" for n in range(200, 250)]]
    with pytest.raises(VendorError) as info:  # refused before any call
        koophone.apply_video_settings(cfg.koophone, [f"i{n}" for n in range(101)], profile)
    assert not info.value.transient
    assert len(sim_calls(sim.url, "koophone")) == 1


def test_every_call_carries_a_fresh_request_id_and_the_token(sim, cfg):
    for _ in range(2):
        flighthub.list_converters(cfg.flighthub)
        koophone.apply_video_settings(cfg.koophone, ["p1"], cfg.koophone.profiles["low"])
        metastudio.start_job(cfg.metastudio, "room-1", {})
    ids = []
    for vendor in ("flighthub", "koophone", "metastudio"):
        headers = [{k.lower(): v for k, v in c["headers"].items()} for c in sim_calls(sim.url, vendor)]
        assert len(headers) == 2 and all(h["x-request-id"] for h in headers)
        assert all(h.get("x-user-token") or h.get("x-auth-token") for h in headers)
        ids += [h["x-request-id"] for h in headers]
    assert len(set(ids)) == 6
    for value in ids:
        uuid.UUID(value)


def test_find_since_pages_through_tasks_of_its_source_and_rung(sim, cfg):
    """find_since() is what resolves a create whose outcome is unknown: it must see a task on a
    later page, only of that source and rung, and none created before its bound."""
    since = time.time() - 2  # the simulator's creation times may be whole seconds
    target = "https://v.example.com/oldest.mp4"
    first = muducloud.create(cfg.transcoder, target, 2)
    for n in range(104):  # newest first: the oldest task ends up on a later page
        muducloud.create(cfg.transcoder, f"https://v.example.com/{n}.mp4", 2)
    assert [t.id for t in muducloud.find_since(cfg.transcoder, target, 2, since)] == [first]
    assert muducloud.find_since(cfg.transcoder, target, 3, since) == []  # another rung
    assert muducloud.find_since(cfg.transcoder, target, 2, time.time() + 60) == []  # all older than the bound


def test_retry_after_values():
    assert _retry_after("2") == 2.0
    assert _retry_after("1.5") == 1.5
    assert _retry_after("-3") == 0.0
    assert 8 <= _retry_after(formatdate(time.time() + 10, usegmt=True)) <= 10
    assert _retry_after(formatdate(time.time() - 100, usegmt=True)) == 0.0
    assert _retry_after("soon") is None
    assert _retry_after(None) is None

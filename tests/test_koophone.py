"""KooPhone video settings: a named profile expanded to the 6 network × encoding combinations,
applied by bindings on a stream state and on demand (ops and the CLI), at most 100 instances
per call. What each instance got is read back from the simulator (the real API cannot)."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from app.cli.main import main as cli
from tests.conftest import ROOM, vendor_sections
from tests.helpers import wait_until
from tests.vendor_harness import (
    Workers,
    applied_rates,
    koophone_instance,
    post_live,
    post_signed,
    set_faults,
    sim_calls,
    stream_event,
    toml_dumps,
)
from workers import actions, ops, vendor_control
from workers.clients.koophone import expand_profile
from workers.context import settings as worker_settings
from workers.video_settings import INSTANCE_PREFIX

LOW, NORMAL = (1000, 1500, 2000), (2000, 4000, 8000)
DONE = ("succeeded", "failed", "skipped")


def statuses(redis, ids) -> list[str | None]:
    return [(actions.record(redis, i) or {}).get("status") for i in ids]


def test_profile_expands_to_the_six_combinations():
    profile = {"definition_540P": {"code_rate": 1000, "fps": 30}, "definition_720P": {"code_rate": 1500, "fps": 30},
               "definition_1080P": {"code_rate": 2000, "fps": 60}}
    settings = expand_profile(profile)
    assert sorted((s["network_type"], s["encoding_type"]) for s in settings) == sorted(
        (n, e) for n in ("MOBILE_NETWORK", "WIFI", "WIRED") for e in ("H264", "H265"))
    assert all(s["video_spec_groups"] == [profile] for s in settings)


def test_reconnecting_applies_low_then_connected_normal(vendor_app, sim, drive, redis_client):
    client = vendor_app.test_client()
    reconnecting = post_live(client, stream_event(ROOM, "RECONNECTING"))
    first = [f"koophone-{reconnecting}-0-0"]
    drive(lambda: statuses(redis_client, first) == ["succeeded"], what="the low profile to be applied")
    for phone in ("phone-1", "phone-2"):
        assert applied_rates(koophone_instance(sim.url, phone)) == {LOW}
        assert redis_client.hget(INSTANCE_PREFIX + phone, "profile") == b"low"

    connected = post_live(client, stream_event(ROOM, "CONNECTED"))
    drive(lambda: statuses(redis_client, [f"koophone-{connected}-0-0"]) == ["succeeded"],
          what="the normal profile to be applied")
    for phone in ("phone-1", "phone-2"):
        assert applied_rates(koophone_instance(sim.url, phone)) == {NORMAL}
    calls = sim_calls(sim.url, "koophone", "video-setting")
    assert [sorted(c["body"]["instance_ids"]) for c in calls] == [["phone-1", "phone-2"]] * 2

    # A state without a profile (END) and another room apply nothing.
    post_live(client, stream_event(ROOM, "END"))
    post_live(client, stream_event("another-room", "RECONNECTING"))
    drive(lambda: redis_client.llen("rq:queue:mediahook-events") == 0, what="the events")
    drive(lambda: redis_client.llen("rq:queue:mediahook-actions") == 0, what="their actions")
    assert len(sim_calls(sim.url, "koophone")) == 2


def test_apply_converges_on_the_latest_state_not_its_own(vendor_app, sim, drive, redis_client):
    """RECONNECTING then CONNECTED, both decided before either apply runs (KooPhone paused, so
    both are held): the first apply already applies CONNECTED's profile, the second finds it
    applied: one call, normal."""
    client = vendor_app.test_client()
    vendor_control.pause(redis_client, "koophone")
    reconnecting = post_live(client, stream_event(ROOM, "RECONNECTING"))
    connected = post_live(client, stream_event(ROOM, "CONNECTED"))
    ids = [f"koophone-{reconnecting}-0-0", f"koophone-{connected}-0-0"]
    drive(lambda: statuses(redis_client, ids) == [vendor_control.HELD] * 2, what="both applies decided and held")
    assert vendor_control.resume(redis_client, "koophone")["released"] == ids
    drive(lambda: all(s in DONE for s in statuses(redis_client, ids)), what="both applies")
    assert statuses(redis_client, ids) == ["succeeded", "succeeded"]
    results = [actions.record(redis_client, i)["result"] for i in ids]
    assert [(r["profile"], r["state"], r["changed"]) for r in results] == [("normal", "CONNECTED", True),
                                                                         ("normal", "CONNECTED", False)]
    assert len(sim_calls(sim.url, "koophone")) == 1
    assert applied_rates(koophone_instance(sim.url, "phone-1")) == {NORMAL}


def test_on_demand_apply_of_150_instances_is_two_calls(vendor_app, sim, drive, redis_client):
    ids = [f"inst-{n:03d}" for n in range(150)]
    action_ids = ops.koophone_apply(redis_client, worker_settings(), "normal", ids)
    assert len(action_ids) == 2
    drive(lambda: statuses(redis_client, action_ids) == ["succeeded"] * 2, what="both batches")
    calls = sim_calls(sim.url, "koophone", "video-setting")
    assert sorted(len(c["body"]["instance_ids"]) for c in calls) == [50, 100]
    assert sorted(i for c in calls for i in c["body"]["instance_ids"]) == ids
    assert all(applied_rates(koophone_instance(sim.url, i)) == {NORMAL} for i in (ids[0], ids[99], ids[149]))


def test_binding_with_more_than_100_instances_is_batched(make_app, sim, drive, redis_client):
    sections = vendor_sections(sim.url)
    phones = [f"p{n}" for n in range(230)]
    sections["koophone"]["bindings"] = [{"room_id": ROOM, "instance_ids": phones, "on_state": {"CONNECTED": "low"}}]
    event = post_live(make_app(**sections).test_client(), stream_event(ROOM, "CONNECTED"))
    ids = [f"koophone-{event}-0-{b}" for b in range(3)]
    drive(lambda: statuses(redis_client, ids) == ["succeeded"] * 3, what="three batches")
    assert sorted(len(c["body"]["instance_ids"]) for c in sim_calls(sim.url, "koophone")) == [30, 100, 100]


def test_on_demand_apply_refuses_bad_input(vendor_app, redis_client):
    with pytest.raises(ValueError, match="no profile 'ultra'"):
        ops.koophone_apply(redis_client, worker_settings(), "ultra", ["a"])
    with pytest.raises(ValueError, match="1 to 32 characters"):
        ops.koophone_apply(redis_client, worker_settings(), "low", ["x" * 33])
    with pytest.raises(ValueError):
        ops.koophone_apply(redis_client, worker_settings(), "low", [])


def test_cli_koophone_apply(sim, base_config, tmp_path, drive, redis_client, make_app):
    make_app(**vendor_sections(sim.url))  # in-process workers use the same settings as the CLI
    config = tmp_path / "cli.toml"
    config.write_text(toml_dumps({**base_config, **vendor_sections(sim.url)}))
    result = CliRunner().invoke(cli, ["koophone", "apply", "low", "cli-1", "cli-2"],
                                env={"MEDIAHOOK_CONFIG": str(config), "REDIS_URL": None})
    assert result.exit_code == 0, result.output
    action_id = result.output.split()[-1]
    assert action_id.startswith("koophone-manual-")
    drive(lambda: statuses(redis_client, [action_id]) == ["succeeded"], what="the CLI's apply")
    assert applied_rates(koophone_instance(sim.url, "cli-2")) == {LOW}

    bad = CliRunner().invoke(cli, ["koophone", "apply", "nope", "cli-1"],
                             env={"MEDIAHOOK_CONFIG": str(config), "REDIS_URL": None})
    assert bad.exit_code != 0 and "profile: No such profile; known: " in bad.output


def test_permanent_error_fails_the_apply_with_the_vendors_message(vendor_app, sim, drive, redis_client):
    set_faults(sim.url, {"koophone": {"vendor_errors": [
        {"times": 1, "code": "KOOPHONE.API.1002", "message": "instances are not in the same region"}]}})
    [action_id] = ops.koophone_apply(redis_client, worker_settings(), "low", ["r1", "r2"])
    drive(lambda: statuses(redis_client, [action_id]) == ["failed"], what="the apply to fail")
    record = actions.record(redis_client, action_id)
    assert record["attempts"] == 1
    assert record["last_error"]["code"] == "KOOPHONE.API.1002"
    assert record["last_error"]["message"] == "instances are not in the same region"
    assert [a["id"] for a in ops.failed_items(redis_client)] == [action_id]
    assert koophone_instance(sim.url, "r1") is None


@pytest.fixture
def workers(base_config, tmp_path):
    started = Workers(base_config, tmp_path)
    yield started
    started.stop_all()


def test_a_slow_reconnecting_put_landing_after_connected_leaves_the_phones_normal(make_app, sim, redis_client,
                                                                                 workers):
    """Two real workers. RECONNECTING's PUT is slow (it lands late at KooPhone); CONNECTED comes
    meanwhile. The phones must end on "normal" at KooPhone, not on the late "low"."""
    sections = vendor_sections(sim.url)
    sections["koophone"]["read_timeout"] = 5.0
    workers.start(redis_client, **sections)
    workers.start(redis_client, **sections)
    client = make_app(**sections).test_client()
    set_faults(sim.url, {"koophone": {"video-setting": {"latency_ms": 1500}}})
    t = time.time() - 10
    reconnecting = post_signed(client, stream_event(ROOM, "RECONNECTING"), t)
    wait_until(lambda: any(c["pending"] for c in sim_calls(sim.url, "koophone")), timeout=20,
               what="RECONNECTING's PUT to be in flight")
    set_faults(sim.url, {})  # only that one call is slow
    connected = post_signed(client, stream_event(ROOM, "CONNECTED"), t + 1)
    ids = [f"koophone-{reconnecting}-0-0", f"koophone-{connected}-0-0"]
    wait_until(lambda: all(s in DONE for s in statuses(redis_client, ids)), timeout=30, what="both applies")
    assert statuses(redis_client, ids) == ["succeeded", "succeeded"]
    wait_until(lambda: not any(c["pending"] for c in sim_calls(sim.url, "koophone")), what="the PUTs to land")
    for phone in ("phone-1", "phone-2"):
        assert applied_rates(koophone_instance(sim.url, phone)) == {NORMAL}
        assert redis_client.hget(INSTANCE_PREFIX + phone, "profile") == b"normal"
    calls = sim_calls(sim.url, "koophone")
    assert [applied_rates({"instance_settings": c["body"]["instance_settings"]}) for c in calls] == [{LOW}, {NORMAL}]


def test_an_unknown_put_outcome_is_not_trusted(make_app, sim, drive, redis_client):
    """RECONNECTING's PUT is applied (low) but its answer lost; CONNECTED comes before the retry.
    Our record still says normal, but it is marked pending, so CONNECTED's apply PUTs normal."""
    sections = vendor_sections(sim.url)
    sections["koophone"].update(retry_base_seconds=2.0, retry_max_seconds=2.0)  # the retry comes later
    client = make_app(**sections).test_client()
    t = time.time() - 10
    first = post_signed(client, stream_event(ROOM, "CONNECTED"), t)
    drive(lambda: statuses(redis_client, [f"koophone-{first}-0-0"]) == ["succeeded"], what="normal")
    set_faults(sim.url, {"koophone": {"drop_times": 1, "after_effect": True}})
    low = post_signed(client, stream_event(ROOM, "RECONNECTING"), t + 1)
    drive(lambda: statuses(redis_client, [f"koophone-{low}-0-0"]) == ["retrying"], what="low's answer to be lost")
    assert applied_rates(koophone_instance(sim.url, "phone-1")) == {LOW}
    again = post_signed(client, stream_event(ROOM, "CONNECTED"), t + 2)
    ids = [f"koophone-{low}-0-0", f"koophone-{again}-0-0"]
    drive(lambda: statuses(redis_client, ids) == ["succeeded"] * 2, what="CONNECTED's apply and low's retry")
    assert applied_rates(koophone_instance(sim.url, "phone-1")) == {NORMAL}
    assert redis_client.hget(INSTANCE_PREFIX + "phone-1", "profile") == b"normal"

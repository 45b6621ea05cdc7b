"""The routes table: every event type a source handles leads somewhere, in one place."""

from __future__ import annotations

from marshmallow import ValidationError

from app.core.body import Unsupported, decode_body
from app.sources import SOURCES, metastudio
from tests.conftest import ROOM
from tests.helpers import FIXTURES
from tests.vendor_harness import post_live, stream_event
from workers import ops
from workers.process import ROUTES, Incoming, decide


def handled_types_in_fixtures() -> set[tuple[str, str]]:
    """(source, event type) of every fixture body that one of its source's endpoints handles."""
    found = set()
    for name, source in SOURCES.items():
        for path in (FIXTURES / name).iterdir():
            if path.suffix not in (".json", ".txt") or path.name.endswith(".verbatim.txt"):
                continue
            raw = path.read_bytes()
            for endpoint in source.ENDPOINTS:
                if path.suffix == ".txt" and not endpoint.accept_base64:
                    continue
                try:
                    parsed = endpoint.parse(decode_body(raw, endpoint.accept_base64))
                except (ValidationError, Unsupported):
                    continue
                if parsed.known:
                    found.add((name, parsed.event_type))
    return found


def test_every_handled_event_type_has_a_route_and_every_route_is_reachable():
    handled = handled_types_in_fixtures()
    assert handled, "the fixtures parse"
    assert handled == set(ROUTES)


def test_every_metastudio_event_type_is_routed():
    assert {(metastudio.NAME, t) for t in metastudio.EVENT_TYPES} <= set(ROUTES)


def test_a_handled_type_without_a_route_is_processed_with_a_note(redis_client, settings_factory):
    ev = Incoming(event_id="e1", source=metastudio.NAME, event_type="SOMETHING_NEW", data={}, received_at=1.0)
    assert decide(redis_client, settings_factory(), ev) == ([], ["no actions for SOMETHING_NEW"])


def test_a_stream_state_is_planned_by_each_effect(vendor_app, sim, drive, redis_client):
    """One state, a converter and a phone binding on its room: each effect queues its own reconcile."""
    connected = post_live(vendor_app.test_client(), stream_event(ROOM, "CONNECTED"))
    drive(lambda: (ops.event_details(redis_client, connected) or {}).get("status") == "processed",
          what="the event job")
    assert sorted(a.split("-")[0] for a in ops.event_details(redis_client, connected)["actions"]) == [
        "converter", "koophone"]

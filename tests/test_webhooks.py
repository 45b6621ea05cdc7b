"""The shared contract (tests/webhook_cases.py), run for every source endpoint, and the check
that no registered endpoint goes without it."""

from __future__ import annotations

from app.sources import SOURCES, hook_routes
from app.sources.base import ApiDoc, Endpoint
from tests.webhook_cases import CASES, WebhookContract


class TestEveryHook(WebhookContract):
    """Every test of WebhookContract, once per case in CASES."""


def test_every_registered_hook_runs_the_contract():
    """A new source endpoint without a case in webhook_cases.CASES fails here."""
    assert sorted(case.path for case in CASES) == sorted(hook_routes())


def test_every_source_declares_the_whole_contract():
    """What app/web/receive.py, the factory and the OpenAPI document read of a source (base.Source)."""
    for name, source in SOURCES.items():
        assert source.NAME == name
        assert source.ENDPOINTS and all(isinstance(e, Endpoint) and e.summary and e.body for e in source.ENDPOINTS)
        assert isinstance(source.KEPT_HEADERS, tuple)
        assert not {h.lower() for h in source.KEPT_HEADERS} & {"authorization", "cookie"}
        assert callable(source.refusal) and callable(source.delivery)
        assert isinstance(source.API_DOC, ApiDoc) and source.API_DOC.security

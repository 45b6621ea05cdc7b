"""The shared contract (tests/webhook_cases.py), run for every source endpoint, and the check
that no registered endpoint goes without it."""

from __future__ import annotations

from app.sources import hook_routes
from tests.webhook_cases import CASES, WebhookContract


class TestEveryHook(WebhookContract):
    """Every test of WebhookContract, once per case in CASES."""


def test_every_registered_hook_runs_the_contract():
    """A new source endpoint without a case in webhook_cases.CASES fails here."""
    assert sorted(case.path for case in CASES) == sorted(hook_routes())

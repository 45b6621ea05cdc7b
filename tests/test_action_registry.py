"""The action registry (workers.actions.KINDS) is the one home of each kind's name, vendor, config
section and job: every entry points at a real job, a real Settings section and a vendor we can
pause; what the worker preloads, what a requeue retries with and which vendor a kind's metrics
name all come from it."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys

from app.core.config import Settings
from tests.conftest import ROOT
from workers import actions, preload, vendor_control


def test_every_registered_action_points_at_a_job_a_section_and_a_vendor():
    sections = {f.name for f in dataclasses.fields(Settings)}
    for kind, action in actions.KINDS.items():
        assert kind == action.kind
        assert callable(getattr(importlib.import_module(action.module), action.job.rsplit(".", 1)[1])), kind
        assert action.section in sections, kind
        assert action.vendor in vendor_control.VENDORS, kind
        assert vendor_control.SECTIONS[action.vendor] == action.section, kind
        # Names say what the action does; the vendor it calls is its label, not part of its name.
        assert kind.split(".", 1)[0] not in vendor_control.VENDORS, kind


def test_the_worker_preloads_every_job_module_from_the_registry():
    modules = preload.job_modules()
    assert "workers.process" in modules
    assert {a.module for a in actions.KINDS.values()} <= set(modules)
    assert {c.__name__ for c in vendor_control.CLIENTS} <= set(modules)


def test_a_kind_of_an_earlier_version_still_finds_its_vendor_and_policy(settings_factory):
    settings = settings_factory(koophone={"base_url": "http://k", "auth_token": "t", "retry_attempts": 7})
    assert actions.vendor_of("koophone.apply") == "koophone"
    assert actions.policy(settings, "koophone.apply").retry_attempts == 7
    assert actions.policy(settings, "video_settings.apply").retry_attempts == 7
    assert actions.policy(settings, "converter.reconcile") is None  # [flighthub] not configured
    assert actions.policy(None, "video_settings.apply") is None
    assert actions.vendor_of("no.such") is None and actions.policy(settings, None) is None


def test_importing_the_registry_loads_no_job_module():
    """The web side reads the registry (a requeue's policy, the console's kinds) without loading
    the job modules: jobs are named by path."""
    code = ("import sys, workers.actions; "
            "print(sorted(m for m in sys.modules if m in ('workers.converter', 'workers.transcode', "
            "'workers.video_settings', 'workers.live', 'flask')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""deploy/prometheus/alerts.yml: accepted by promtool, unit-tested by promtool (alerts_test.yml),
each alert with a severity and a runbook that exists, tested firing and not firing, and summarised
truly by the table in docs/operations.md."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
RUNBOOK_BASE = "https://git.example.com/mediahook/blob/main/docs/operations.md#"
SEVERITIES = {"critical", "warning"}

# Figures every web host reads from Redis and exports alike (app/web/metrics.py): aggregated over
# hosts with max, never summed.
FLEET_WIDE = re.compile(r"\bmediahook_(queue_\w+|actions_total|action_retries_total|vendor_calls_total|"
                        r"vendor_call_seconds\w*|actions_failed|rq_workers|sweep_\w+)\b")

PROMTOOL = os.environ.get("PROMTOOL") or shutil.which("promtool")
needs_promtool = pytest.mark.skipif(not PROMTOOL, reason="promtool is not installed (.ci/run installs it)")


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict]:
    found = [r for r in rules() if "alert" in r]
    names = [r["alert"] for r in found]
    assert len(names) == len(set(names)), "alert names repeat"
    return {r["alert"]: r for r in found}


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_check_rules():
    out = promtool("check", "rules", ALERTS.name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout


@needs_promtool
def test_promtool_unit_tests_pass():
    out = promtool("test", "rules", ALERTS_TEST.name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@needs_promtool
def test_promtool_unit_tests_catch_a_summed_fleet_wide_series(tmp_path):
    """The unit tests would have failed the old "retries climbing" expression (a sum over hosts)."""
    [rule] = [r for r in rules() if r.get("alert") == "MediahookRetriesClimbing"]
    old = "sum(rate(mediahook_action_retries_total[15m])) > 1"
    text = ALERTS.read_text()
    assert f"expr: {rule['expr']}\n" in text
    (tmp_path / ALERTS.name).write_text(text.replace(f"expr: {rule['expr']}\n", f"expr: {old}\n"))
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)
    out = subprocess.run([PROMTOOL, "test", "rules", ALERTS_TEST.name], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "MediahookRetriesClimbing" in out.stdout + out.stderr


def test_fleet_wide_figures_are_never_summed_over_hosts():
    for name, rule in alerts().items():
            # Every selector of a fleet-wide figure sits right inside a max over hosts.
            for match in FLEET_WIDE.finditer(rule["expr"]):
                assert re.search(r"max without \(instance\) \((rate\()?$", rule["expr"][:match.start()]), name


def headings(markdown: str) -> set[str]:
    """GitHub's anchors for a document's headings."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6} (.+)$", markdown, re.M)}


def test_every_alert_has_a_severity_a_summary_and_a_runbook_that_exists():
    anchors = headings(OPERATIONS.read_text())
    for name, rule in alerts().items():
        assert name.startswith("Mediahook"), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        url = notes["runbook_url"]
        assert url.startswith(RUNBOOK_BASE), name
        assert url.removeprefix(RUNBOOK_BASE) in anchors, f"{name}: no heading for {url}"


def test_every_alert_is_unit_tested_firing_and_not_firing():
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = set(alerts())
    assert fired == names, f"never fires in a test: {names - fired}; unknown: {fired - names}"
    assert quiet == names, f"never tested quiet: {names - quiet}; unknown: {quiet - names}"


def operations_table() -> dict[str, tuple[str, str]]:
    """docs/operations.md's alert table: name -> (severity, for)."""
    rows = re.findall(r"^\| `(Mediahook\w+)` \| (\w+) \| ([^|]+?) \|", OPERATIONS.read_text(), re.M)
    return {name: (severity, duration) for name, severity, duration in rows}


def test_operations_table_summarises_alerts_yml():
    table = operations_table()
    assert table == {name: (rule["labels"]["severity"], rule.get("for", "–")) for name, rule in alerts().items()}
    assert "deploy/prometheus/alerts.yml" in OPERATIONS.read_text()

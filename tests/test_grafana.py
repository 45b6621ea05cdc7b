"""deploy/grafana/mediahook.json, and the expressions of both it and deploy/prometheus/alerts.yml:
every metric they name is one a real app's /metrics exports (after traffic of every kind), with
labels it really has; the dashboard's queries parse (promtool) and cover the figures ops needs."""

from __future__ import annotations

import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.core import counters
from tests.helpers import CDN_TOKEN, fixture_bytes, signed_path
from tests.test_alerts import FLEET_WIDE, PROMTOOL, alerts, needs_promtool
from tests.vendor_harness import set_faults, upload_body
from workers import actions, ops, transcode
from workers.context import settings as worker_settings

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "mediahook.json"

# Metrics of other exporters (and Prometheus's own) that alerts.yml names; each alert says which.
OTHER_EXPORTERS = {
    "node_systemd_unit_state": "node_exporter",
    "redis_memory_used_bytes": "redis_exporter",
    "redis_memory_max_bytes": "redis_exporter",
    "probe_ssl_earliest_cert_expiry": "blackbox_exporter",
    "up": "Prometheus itself",
}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, keywords, labels or durations)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = re.findall(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)
    return {w for w in words if w.lower() not in _KEYWORDS}


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Each ``name{matchers}`` in an expression: the name and the label names it matches on."""
    return [(name, set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers)))
            for name, matchers in re.findall(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expr)]


def test_metric_names_are_read_from_promql():
    assert metric_names('sum by (le) (rate(a_bucket{x="y",z=~"$v"}[$__rate_interval])) / b_total offset 5m') \
        == {"a_bucket", "b_total"}
    assert metric_names("delta((max without (instance) (c))[1h:1m]) > 10 and d > 0 or vector(0)") == {"c", "d"}
    assert metric_names("probe_ssl_earliest_cert_expiry - time() < 14 * 86400 unless on (job) e") == {
        "probe_ssl_earliest_cert_expiry", "e"}
    assert selectors('rate(m{outcome="x", source=~"$s"}[5m])') == [("m", {"outcome", "source"})]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    found = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return found


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in panels() for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            [inner] = re.findall(r"^label_values\((.*),\s*\w+\)$", var["query"]["query"])
            exprs.append(inner)
    return exprs


def alert_exprs() -> list[str]:
    return [rule["expr"] for rule in alerts().values()]


# --- what /metrics really exports --------------------------------------------------------------

@pytest.fixture
def scraped(vendor_app, sim, drive, redis_client) -> str:
    """A real app's /metrics after callbacks of several outcomes, actions that succeeded, retried
    and failed, and vendor calls."""
    client = vendor_app.test_client()
    assert client.post(signed_path(), data=fixture_bytes("metastudio", "shoot_script_switch.json")).status_code == 200
    assert client.post("/hooks/cdnetworks/vod-upload?token=wrong", data=b"{}").status_code == 401
    set_faults(sim.url, {"muducloud": {"create-transcode": {"error_times": 1}}})
    client.post(f"/hooks/cdnetworks/vod-upload?token={CDN_TOKEN}", data=upload_body(("VDASH", 480)))
    drive(lambda: {s.get("state") for s in transcode.video_transcodes(redis_client, "VDASH").values()} == {"success"},
          what="the transcodes to succeed")
    set_faults(sim.url, {"koophone": {"vendor_errors": [{"times": 1, "code": "KOOPHONE.API.1002", "message": "x"}]}})
    [apply_id] = ops.koophone_apply(redis_client, worker_settings(), "low", ["m1"])
    drive(lambda: (actions.record(redis_client, apply_id) or {}).get("status") == "failed", what="the apply to fail")

    # What the sweep counts when it recovers work a dead worker left (tests/test_sweep.py makes that happen).
    counters.count_sweep(redis_client, "event", "requeued")
    counters.count_sweep(redis_client, "action", "failed")

    r = client.get("/metrics")
    assert r.status_code == 200
    return r.get_data(as_text=True)


@pytest.fixture
def exported(scraped: str) -> dict[str, set[str]]:
    """Sample name -> its label names, in ``scraped``."""
    labels: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(scraped):
        for sample in family.samples:
            labels[sample.name] |= set(sample.labels)
    # The traffic made the labelled series this test is about.
    for name in ("mediahook_action_retries_total", "mediahook_vendor_call_seconds_bucket", "mediahook_actions_total"):
        assert labels[name], name
    return dict(labels)


@needs_promtool
def test_promtool_accepts_what_metrics_exports(scraped):
    out = subprocess.run([PROMTOOL, "check", "metrics"], input=scraped, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr
    assert "mediahook_build_info{" in scraped and "process_cpu_seconds_total{" in scraped


def check_names(exprs: list[str], exported: dict[str, set[str]], others: dict[str, str]) -> None:
    for expr in exprs:
        for name in metric_names(expr):
            assert name in exported or name in others, f"{name} is not exported by /metrics: {expr}"
        for name, used in selectors(expr):
            if name in exported:
                unknown = used - exported[name] - TARGET_LABELS
                assert not unknown, f"{name} has no label {unknown}: {expr}"


def test_every_dashboard_query_names_an_exported_metric_and_label(exported):
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    check_names(exprs, exported, {})


def test_every_alert_names_an_exported_metric_and_label(exported):
    check_names(alert_exprs(), exported, OTHER_EXPORTERS)
    used = set().union(*map(metric_names, alert_exprs()))
    assert set(OTHER_EXPORTERS) <= used, "OTHER_EXPORTERS lists a metric no alert uses"


def test_the_checks_catch_a_metric_or_label_that_is_not_exported(exported):
    with pytest.raises(AssertionError, match="not exported"):
        check_names(["sum(rate(mediahook_callbacks[5m]))"], exported, {})  # the family, not the sample
    with pytest.raises(AssertionError, match="no label"):
        check_names(['max(mediahook_queue_depth{queues="x"})'], exported, {})


# --- the dashboard itself ----------------------------------------------------------------------

def test_dashboard_shows_the_figures_ops_needs():
    used = set().union(*map(metric_names, dashboard_exprs()))
    for name in ("mediahook_callbacks_total", "mediahook_callback_seconds_bucket", "mediahook_spool_depth",
                 "mediahook_queue_depth", "mediahook_queue_oldest_seconds", "mediahook_actions_total",
                 "mediahook_vendor_call_seconds_bucket", "mediahook_action_retries_total", "mediahook_actions_failed",
                 "mediahook_rq_workers", "mediahook_spool_filesystem_avail_bytes", "process_cpu_seconds_total",
                 "process_resident_memory_bytes", "mediahook_build_info"):
        assert name in used, name


def test_dashboard_uses_the_datasource_variable_everywhere():
    d = dashboard()
    [ds] = [v for v in d["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    want = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in panels():
        if panel["type"] != "row":
            assert panel["datasource"] == want, panel["title"]
            assert panel["targets"] and all(t["datasource"] == want for t in panel["targets"]), panel["title"]
    for var in d["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"] == want, var["name"]
    assert "${DS_PROMETHEUS}" in DASHBOARD.read_text() and "uid\": \"P" not in DASHBOARD.read_text()


def test_dashboard_layout_is_sound():
    d = dashboard()
    assert d["uid"] == "mediahook" and d["title"] and d["schemaVersion"] >= 36
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in panels():
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_dashboard_sums_no_fleet_wide_figure_over_hosts():
    for expr in dashboard_exprs():
        for match in FLEET_WIDE.finditer(expr):
            assert re.search(r"max without \(instance\) \((rate\()?$", expr[:match.start()]), expr


@needs_promtool
def test_dashboard_queries_parse(tmp_path):
    """promtool parses every query (as a recording rule), with Grafana's variables filled in."""
    fill = {"$__rate_interval": "5m", "$job": ".*", "$instance": ".*"}

    def filled(expr: str) -> str:
        for var, value in fill.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        return expr

    rules = [{"record": f"dashboard:query_{i}", "expr": filled(e)} for i, e in enumerate(dashboard_exprs())]
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([PROMTOOL, "check", "rules", "dashboard.yml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr

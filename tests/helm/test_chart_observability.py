"""The chart's PrometheusRule and Grafana dashboard: the alerts fire and stay quiet on recorded series
(`promtool test rules`), and every dashboard query parses with Prometheus' own parser (promtool) and a
PromQL parser. That they read only metrics the operator exports is checked against a real scrape in
tests/e2e/test_observability.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.helm.conftest import Render, find, one
from tests.helm.promql import DASHBOARD, dashboard, dashboard_queries, metric_names

ALERTS_TEST = Path(__file__).parent / "alerts" / "portico-rules.test.yaml"
RUNBOOKS = "https://runbooks.example/operations.md"
ALERT_NAMES = {
    "PorticoTriggerFailing",
    "PorticoScheduleLate",
    "PorticoTriggerErrors",
    "PorticoWebhook5xx",
    "PorticoWebhookUnauthorized",
    "PorticoQueueServiceErrors",
    "PorticoQueueServiceSlow",
    "PorticoLeaderChurn",
    "PorticoNoLeader",
    "PorticoOperatorAbsent",
    "PorticoStatusPatchErrors",
}


def rules_of(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rule = one(objects, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def write_rules(objects: list[dict[str, Any]], directory: Path) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": one(objects, "PrometheusRule")["spec"]["groups"]}))
    return path


def promtool_run(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_prometheus_rule_is_off_by_default_and_the_dashboard_too(render: Render) -> None:
    objects = render()
    assert not find(objects, "PrometheusRule")
    assert not [o for o in find(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]


def test_alerts_fire_and_stay_quiet_on_recorded_series(
    render: Render, promtool: Path, tmp_path: Path
) -> None:
    objects = render(
        **{"metrics.prometheusRule.enabled": True, "metrics.prometheusRule.runbookBaseUrl": RUNBOOKS}
    )
    assert {r["alert"] for r in rules_of(objects)} == ALERT_NAMES
    rules = write_rules(objects, tmp_path)
    check = promtool_run(promtool, "check", "rules", str(rules), cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)
    test = promtool_run(promtool, "test", "rules", ALERTS_TEST.name, cwd=tmp_path)
    assert test.returncode == 0, test.stdout + test.stderr


def test_a_changed_threshold_changes_what_fires(render: Render, promtool: Path, tmp_path: Path) -> None:
    """The unit tests can fail: with a schedule lateness threshold of 10s the late schedule is fine."""
    objects = render(
        **{
            "metrics.prometheusRule.enabled": True,
            "metrics.prometheusRule.runbookBaseUrl": RUNBOOKS,
            "metrics.prometheusRule.scheduleLatenessSeconds": 10,
        }
    )
    write_rules(objects, tmp_path)
    shutil.copy(ALERTS_TEST, tmp_path / ALERTS_TEST.name)
    test = promtool_run(promtool, "test", "rules", ALERTS_TEST.name, cwd=tmp_path)
    assert test.returncode != 0
    assert "PorticoScheduleLate" in test.stdout + test.stderr


def test_alerts_can_be_left_out_labelled_and_selected(render: Render) -> None:
    objects = render(
        **{
            "metrics.prometheusRule.enabled": True,
            "metrics.prometheusRule.disabledAlerts": ["PorticoLeaderChurn", "PorticoNoLeader"],
            "metrics.prometheusRule.alertLabels": {"team": "platform"},
            "metrics.prometheusRule.labels": {"release": "kube-prometheus-stack"},
        }
    )
    rules = rules_of(objects)
    assert {r["alert"] for r in rules} == ALERT_NAMES - {"PorticoLeaderChurn", "PorticoNoLeader"}
    assert all(r["labels"]["team"] == "platform" and r["labels"]["severity"] for r in rules)
    assert all("runbook_url" not in r["annotations"] for r in rules)
    assert one(objects, "PrometheusRule")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    absent = next(r for r in rules if r["alert"] == "PorticoOperatorAbsent")
    assert 'namespace="portico-system"' in absent["expr"]


def test_service_monitor_keeps_the_triggers_namespace_label(render: Render) -> None:
    objects = render(**{"metrics.serviceMonitor.enabled": True})
    (endpoint,) = one(objects, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True


def test_dashboard_ships_as_a_configmap_for_the_grafana_sidecar(render: Render) -> None:
    objects = render(**{"metrics.grafanaDashboard.enabled": True})
    (cm,) = [o for o in find(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "portico-system"
    assert json.loads(cm["data"]["portico-triggers.json"]) == dashboard()
    elsewhere = render(
        **{
            "metrics.grafanaDashboard.enabled": True,
            "metrics.grafanaDashboard.namespace": "monitoring",
            "metrics.grafanaDashboard.annotations": {"grafana_folder": "Portico"},
        }
    )
    (cm,) = [o for o in find(elsewhere, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Portico"}


def test_dashboard_is_well_formed() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "namespace", "trigger"}
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in (
        "jobs",
        "errors",
        "phase",
        "webhook requests",
        "webhook latency",
        "lateness",
        "queue",
        "leader",
    ):
        assert topic in titles, topic


def test_every_dashboard_query_parses(promtool: Path, tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 12
    for title, expr in queries:
        assert metric_names(expr), (title, expr)
    # Prometheus' own parser: each query as a recording rule, checked by promtool.
    rules = [{"record": f"dashboard:panel_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": DASHBOARD.stem, "rules": rules}]}))
    check = promtool_run(promtool, "check", "rules", str(path), cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_broken_query_is_caught(promtool: Path, tmp_path: Path) -> None:
    import pytest

    with pytest.raises(ValueError):
        metric_names("sum by (le (rate(portico_jobs_created_total[5m]))")
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "rate(x[5m]"}]}]})
    )
    assert promtool_run(promtool, "check", "rules", str(path), cwd=tmp_path).returncode != 0

"""The chart's dashboard and alerts read only metrics the operator exports: checked against a real
`/metrics` scrape of the operator process running schedule and webhook triggers."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest
import yaml

from tests.conftest import Kubectl
from tests.e2e.conftest import Operator, OperatorFactory, status_of, trigger_manifest, wait_for
from tests.helm.conftest import CHART_DIR, QUEUE_URL, find_helm
from tests.helm.promql import dashboard_queries, exported_names, metric_names


def scrape(op: Operator) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def alert_expressions() -> list[tuple[str, str]]:
    import subprocess

    helm = find_helm()
    if helm is None:
        pytest.fail("helm not found: run `make helm`", pytrace=False)
    out = subprocess.run(
        [str(helm), "template", "portico", str(CHART_DIR), "--namespace", "portico-system",
         "--set", f"queueService.url={QUEUE_URL}", "--set", "metrics.prometheusRule.enabled=true",
         "--show-only", "templates/prometheusrule.yaml"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    rule = yaml.safe_load(out)
    return [(r["alert"], r["expr"]) for g in rule["spec"]["groups"] for r in g["rules"]]


def post(url: str, body: bytes, content_type: str = "application/json") -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_dashboard_and_alerts_use_only_exported_metrics(
    kubectl: Kubectl, start_operator: OperatorFactory
) -> None:
    op = start_operator()
    kubectl.apply(trigger_manifest("tick", {"schedule": {"cron": "@every 1s"}}))
    kubectl.apply(trigger_manifest("hook", {"webhook": {"auth": {"type": "none"}}}))
    hook: dict[str, Any] = wait_for(
        lambda: (s := status_of(kubectl, "hook")).get("isRunning") and s, message="webhook running"
    )
    url = op.webhook_url + hook["webhookPath"]
    assert post(url, b'{"job_type": "e2e.job", "payload": {"a": 1}}') < 300
    assert post(url, b"not json", "text/plain") >= 400
    wait_for(lambda: (status_of(kubectl, "tick").get("jobsCreated") or 0) >= 2, message="schedule fires")

    def leading() -> str | None:
        text = scrape(op)
        return text if "portico_leader 1.0" in text else None

    exposition = wait_for(leading, message="leading")
    exported = exported_names(exposition)
    for family in (
        "portico_jobs_created_total",
        "portico_schedule_fire_lateness_seconds_bucket",
        "portico_webhook_requests_total",
        "portico_webhook_request_duration_seconds_bucket",
        "portico_queue_request_duration_seconds_bucket",
        "portico_leader_transitions_total",
    ):
        assert family in exported, family
    assert (
        f'portico_jobs_created_total{{namespace="{kubectl.namespace}",source="schedule",'
        f'target="queueService",trigger="tick"}}' in (exposition.replace(", ", ","))
    )

    used: set[str] = set()
    for title, expr in dashboard_queries():
        names = metric_names(expr)
        assert names <= exported, f"dashboard panel {title!r} reads {sorted(names - exported)}"
        used |= names
    for alert, expr in alert_expressions():
        names = metric_names(expr)
        assert names <= exported, f"alert {alert} reads {sorted(names - exported)}"
        used |= names
    trigger_families = {n for n in exported if n.startswith("portico_") and not n.endswith("_created")}
    unused = trigger_families - used - {"portico_trigger_running", "portico_leader_transitions_total"}
    assert not {n for n in unused if not n.endswith(("_sum", "_count"))}, sorted(unused)

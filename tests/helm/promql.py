"""PromQL of the chart's alerts and dashboard, taken apart with a real PromQL parser: the queries as
text, and the metric names each one reads."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser

from tests.helm.conftest import CHART_DIR

DASHBOARD = CHART_DIR / "dashboards" / "portico-triggers.json"
# Grafana's variables, replaced by what Grafana would put there, so the query is plain PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": ".*", "$trigger": ".*"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, Grafana variables substituted."""
    out = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], grafana_to_promql(target["expr"])))
    return out


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    leftover = re.findall(r"\$\w+", expr)
    assert not leftover, f"unknown Grafana variables {leftover} in {expr}"
    return expr


def metric_names(expr: str) -> set[str]:
    """Every metric a query selects (raises ValueError if it does not parse)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
            assert name, f"a selector without a metric name in {expr}"
            names.add(name)

    promql_parser.walk(promql_parser.parse(expr), visit, None)
    return names


def exported_names(exposition: str) -> set[str]:
    """The sample names a Prometheus text exposition offers: counters with `_total`, histograms with
    their `_bucket`/`_sum`/`_count` series, as PromQL sees them."""
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in HISTOGRAM_SUFFIXES}
        else:
            names.add(family.name)
    return names

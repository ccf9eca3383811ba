"""Printing and argument handling of the plugin that need no cluster."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from portico.kubectl_plugin.cluster import PluginError
from portico.kubectl_plugin.get import target_of
from portico.kubectl_plugin.main import main
from portico.kubectl_plugin.next_fires import fire_times
from portico.kubectl_plugin.output import human_duration, table, until


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5s"), (119, "119s"), (150, "2m30s"), (600, "10m"), (3 * 3600 + 120, "3h2m"), (30 * 3600, "30h"),
     (3 * 86400 + 3600, "3d1h"), (40 * 86400, "40d"), (800 * 86400, "2y70d")],
)  # fmt: skip
def test_durations_read_like_kubectls(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_until_and_table() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert until("2026-01-01T00:00:30Z", now) == "in 30s"
    assert until("2025-12-31T23:59:00Z", now) == "60s ago"
    assert until(None, now) == "<none>"
    out = io.StringIO()
    table(out, ["NAME", "X"], [["a", "1"], ["longer", ""]])
    assert out.getvalue() == "NAME     X\na        1\nlonger\n"


def test_fire_times_use_the_operators_parser_and_messages() -> None:
    schedule = {"cron": "0 9 * * MON-FRI", "timeZone": "Europe/Berlin", "exclusionDates": ["2026-01-02"]}
    spec, times = fire_times(schedule, datetime(2025, 12, 31, 12, tzinfo=UTC), 2)
    assert [t.isoformat() for t in times] == ["2026-01-01T08:00:00+00:00", "2026-01-05T08:00:00+00:00"]
    assert spec.time_zone == "Europe/Berlin"
    with pytest.raises(PluginError, match=r"spec.schedule.cron: .*"):
        fire_times({"cron": "61 * * * *"}, datetime(2026, 1, 1, tzinfo=UTC), 1)
    with pytest.raises(PluginError, match=r"spec.schedule.timeZone"):
        fire_times({"cron": "@daily", "timeZone": "Mars/Base"}, datetime(2026, 1, 1, tzinfo=UTC), 1)


@pytest.mark.parametrize(
    "argv",
    [["frobnicate"], ["get", "-o", "bogus"], ["describe", "x", "-A"], ["run-now"], ["next", "--from", "noon"],
     ["run-now", "x", "--timeout", "-1"]],
)  # fmt: skip
def test_usage_errors_exit_2(argv: list[str]) -> None:
    err = io.StringIO()
    assert main(argv, out=io.StringIO(), err=err) == 2


def test_unreachable_cluster_is_an_error_not_a_traceback(tmp_path: object) -> None:
    from pathlib import Path

    config = Path(str(tmp_path)) / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u, namespace: ns1}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    err = io.StringIO()
    assert (
        main(["get", "--kubeconfig", str(config), "--request-timeout", "3"], out=io.StringIO(), err=err) == 1
    )
    assert err.getvalue().startswith("error: ")
    missing = io.StringIO()
    assert main(["get", "--kubeconfig", str(config) + ".nope"], out=io.StringIO(), err=missing) == 1
    assert "kubeconfig" in missing.getvalue()


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        ({"job": {"type": "report.daily", "queue": "reports"}}, "reports/report.daily"),
        ({"job": {"type": "t"}, "target": {"queueService": {"url": "http://q:8000"}}}, "default/t"),
        (
            {"job": {"type": "release.deploy"}, "target": {"kubernetesJob": {}}},
            "kubernetesJob:release.deploy",
        ),
        ({"job": {"type": "email.send"}, "target": {"celery": {}}}, "celery:email.send"),
    ],
)
def test_the_target_column_names_where_the_jobs_go(spec: dict[str, object], shown: str) -> None:
    assert target_of({"spec": spec}) == shown

"""`kubectl portico` against the real control plane, the real operator process and the real queue
service: the console script is run as kubectl runs it, and what it prints is checked against what the
operator and the queue service did."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from portico.testing.control_plane import ControlPlane
from tests.conftest import Kubectl, QueueServiceProcess
from tests.e2e.conftest import OperatorFactory, list_jobs, status_of, trigger_manifest, wait_for

PLUGIN = Path(sys.executable).parent / "kubectl-portico"
DAILY = {"schedule": {"cron": "0 9 * * *", "timeZone": "Europe/Berlin"}}
REPORT_JOB = {"type": "report.daily", "queue": "reports", "priority": 5}


def plugin(
    control_plane: ControlPlane, namespace: str | None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    assert PLUGIN.exists(), "kubectl-portico is not installed: `make dev`"
    cmd = [str(PLUGIN), *args, "--kubeconfig", str(control_plane.kubeconfig)]
    if namespace:
        cmd += ["-n", namespace]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def table(text: str) -> list[dict[str, str]]:
    """A kubectl-style table as dicts, splitting on the header's column starts."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"(?:(?<=\s{3})|^)\S", header)]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return [
        {n: line[a:b].strip() for n, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
        for line in lines[1:]
    ]


def running(kubectl: Kubectl, name: str) -> dict[str, Any] | None:
    s = status_of(kubectl, name)
    return s if s.get("phase") == "Running" and s.get("isRunning") else None


@pytest.fixture
def run(control_plane: ControlPlane, namespace: str) -> Any:
    def call(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return plugin(control_plane, namespace, *args, env=env)

    return call


def test_get_shows_next_fire_target_and_last_error(
    kubectl: Kubectl, start_operator: OperatorFactory, run: Any, control_plane: ControlPlane
) -> None:
    start_operator()
    kubectl.apply(trigger_manifest("daily", DAILY, job=REPORT_JOB))
    kubectl.apply(trigger_manifest("hook", {"webhook": {"auth": {"type": "none"}}}))
    amqp = {"amqp": {"urlSecretRef": {"name": "missing", "key": "url"}, "queue": "q"}}
    kubectl.apply(trigger_manifest("broken", amqp))
    wait_for(lambda: running(kubectl, "daily") and running(kubectl, "hook"), message="running")
    wait_for(lambda: status_of(kubectl, "broken").get("lastError"), message="broken has an error")

    proc = run("get")
    assert proc.returncode == 0, proc.stderr
    rows = {r["NAME"]: r for r in table(proc.stdout)}
    assert list(table(proc.stdout)[0]) == [
        "NAME", "SOURCE", "PHASE", "JOBS", "LAST JOB", "NEXT", "TARGET", "LAST ERROR", "AGE",
    ]  # fmt: skip
    assert rows["daily"]["SOURCE"] == "schedule" and rows["daily"]["PHASE"] == "Running"
    assert rows["daily"]["TARGET"] == "reports/report.daily"
    assert re.fullmatch(r"in \d+[smhd]\w*", rows["daily"]["NEXT"]), rows["daily"]
    assert rows["hook"]["NEXT"] == "<none>" and rows["hook"]["LAST ERROR"] == "<none>"
    assert "missing" in rows["broken"]["LAST ERROR"] and rows["broken"]["PHASE"] == "Failed"

    wide = table(run("get", "-o", "wide").stdout)
    assert {r["NAME"]: r["LISTENS TO"] for r in wide}["daily"] == "0 9 * * * (Europe/Berlin)"
    listed = json.loads(run("get", "-o", "json").stdout)
    assert listed["kind"] == "List" and sorted(i["metadata"]["name"] for i in listed["items"]) == [
        "broken",
        "daily",
        "hook",
    ]
    one = json.loads(run("get", "daily", "-o", "json").stdout)
    assert one["status"]["nextScheduleTime"] == status_of(kubectl, "daily")["nextScheduleTime"]
    assert run("get", "hook", "-o", "name").stdout == "jobtrigger.triggers.portico.dev/hook\n"
    kubectl("label", "jt", "hook", "team=ci")
    assert [r["NAME"] for r in table(run("get", "-l", "team=ci").stdout)] == ["hook"]
    everywhere = table(plugin(control_plane, None, "get", "-A").stdout)
    assert {r["NAMESPACE"] for r in everywhere if r["NAME"] == "daily"} >= {kubectl.namespace}

    missing = run("get", "nope")
    assert missing.returncode == 1 and 'jobtriggers.triggers.portico.dev "nope" not found' in missing.stderr
    assert run("get", "-o", "bogus").returncode == 2
    assert run("suspend").returncode == 2

    # kubectl itself: the plugin is found on PATH, and `get jt -o wide` has the Next printer column.
    kubectl_dir = kubectl.binary.parent
    path = f"{PLUGIN.parent}{os.pathsep}{kubectl_dir}{os.pathsep}{os.environ['PATH']}"
    via_kubectl = subprocess.run(
        [str(kubectl.binary), "portico", "get", "daily", "-n", kubectl.namespace or ""],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path, "KUBECONFIG": str(kubectl.kubeconfig)},
        timeout=60,
    )
    assert via_kubectl.returncode == 0, via_kubectl.stderr
    assert table(via_kubectl.stdout)[0]["NAME"] == "daily"
    assert "NEXT" in kubectl("get", "jt", "-o", "wide").stdout.splitlines()[0]
    assert "NEXT" not in kubectl("get", "jt").stdout.splitlines()[0]


def test_next_is_what_the_operator_schedules(
    kubectl: Kubectl, start_operator: OperatorFactory, run: Any
) -> None:
    start_operator()
    kubectl.apply(trigger_manifest("daily", DAILY))
    kubectl.apply(trigger_manifest("hook", {"webhook": {"auth": {"type": "none"}}}))
    status = wait_for(lambda: running(kubectl, "daily"), message="running")
    fires = json.loads(run("next", "daily", "--count", "3", "-o", "json").stdout)["fires"]
    assert fires[0]["utc"] == status["nextScheduleTime"]
    assert [f["local"][11:19] for f in fires] == ["09:00:00"] * 3

    # Across the spring-forward change in Berlin: 02:30 does not exist on 2026-03-29 and fires at 03:30.
    kubectl.apply(trigger_manifest("dst", {"schedule": {"cron": "30 2 * * *", "timeZone": "Europe/Berlin"}}))
    proc = run("next", "dst", "--count", "3", "--from", "2026-03-27T12:00:00Z", "-o", "json")
    assert [f["utc"] for f in json.loads(proc.stdout)["fires"]] == [
        "2026-03-28T01:30:00Z",
        "2026-03-29T01:30:00Z",
        "2026-03-30T00:30:00Z",
    ]
    text = run("next", "dst", "--count", "2", "--from", "2026-03-27T12:00:00Z").stdout
    assert "2026-03-29 03:30:00 CEST" in text and "2026-03-29 01:30:00 UTC" in text

    every = table(run("next").stdout)
    assert sorted(r["NAME"] for r in every) == ["daily", "dst"]
    wrong = run("next", "hook")
    assert wrong.returncode == 1 and "webhook source, not a schedule" in wrong.stderr
    assert run("next", "daily", "--count", "0").returncode == 1
    assert run("next", "daily", "--from", "yesterday").returncode == 2


def test_run_now_waits_for_the_accepted_job_and_history_lists_it(
    kubectl: Kubectl,
    start_operator: OperatorFactory,
    run: Any,
    queue_service_process: QueueServiceProcess,
) -> None:
    start_operator()
    kubectl.apply(trigger_manifest("daily", DAILY, job=REPORT_JOB))
    kubectl.apply(trigger_manifest("hook", {"webhook": {"auth": {"type": "none"}}}))
    wait_for(lambda: running(kubectl, "daily") and running(kubectl, "hook"), message="running")

    ids = []
    for _ in range(2):
        proc = run("run-now", "daily", "--timeout", "30")
        assert proc.returncode == 0, proc.stderr
        match = re.search(r"job (\S+) accepted", proc.stdout)
        assert match, proc.stdout
        ids.append(match[1])
    assert ids[0] != ids[1]
    last = status_of(kubectl, "daily")["lastRunNow"]
    assert last["jobId"] == ids[1]
    stored = {j["id"]: j for j in list_jobs(queue_service_process.url, queue="reports")}
    assert set(ids) <= set(stored)
    assert stored[ids[1]]["metadata"]["run_now"] == last["token"]
    assert stored[ids[1]]["metadata"]["trigger.name"] == "daily"

    history = run("history", "daily", "--queue-url", queue_service_process.url)
    assert history.returncode == 0, history.stderr
    rows = table(history.stdout)
    assert [r["JOB ID"] for r in rows] == [ids[1], ids[0]]
    assert all(r["STATUS"] == "pending" and r["ATTEMPTS"] == "0/3" for r in rows)
    assert all(r["TYPE"] == "report.daily" and r["QUEUE"] == "reports" for r in rows)
    wide = table(run("history", "daily", "-o", "wide", "--queue-url", queue_service_process.url).stdout)
    assert wide[0]["CAUSE"] == f"run-now {last['token']}"
    assert wide[0]["IDEMPOTENCY KEY"].endswith(f":run-now:{last['token']}")
    as_json = json.loads(
        run("history", "daily", "--limit", "1", "-o", "json", "--queue-url", queue_service_process.url).stdout
    )
    assert [j["id"] for j in as_json["jobs"]] == [ids[1]]
    empty = run("history", "hook", "--queue-url", queue_service_process.url)
    assert empty.returncode == 0 and "No jobs found" in empty.stderr

    # The queue URL as the chart's operator Deployment sets it.
    kubectl.apply(operator_deployment(kubectl.namespace, queue_url=queue_service_process.url))
    found = run("history", "daily", "--operator-namespace", kubectl.namespace)
    assert [r["JOB ID"] for r in table(found.stdout)] == [ids[1], ids[0]]
    down = run("history", "daily", "--queue-url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "cannot reach the queue service" in down.stderr

    not_schedule = run("run-now", "hook")
    assert not_schedule.returncode == 1 and "run-now works on schedules only" in not_schedule.stderr
    assert run("suspend", "daily").stdout == "jobtrigger.triggers.portico.dev/daily suspended\n"
    wait_for(lambda: status_of(kubectl, "daily").get("phase") == "Suspended", message="Suspended")
    assert kubectl.json("get", "jt", "daily")["spec"]["suspend"] is True
    assert {r["NAME"]: r["NEXT"] for r in table(run("get").stdout)}["daily"] == "<suspended>"
    assert "already suspended" in run("suspend", "daily").stdout
    refused = run("run-now", "daily")
    assert refused.returncode == 1 and "suspended" in refused.stderr
    assert run("resume", "daily").returncode == 0
    wait_for(lambda: running(kubectl, "daily"), message="running again")


def operator_deployment(namespace: str, *, queue_url: str, args: list[str] | None = None) -> dict[str, Any]:
    """A Deployment shaped like the chart's operator (no Pods run here: there is no controller)."""
    labels = {"app.kubernetes.io/name": "portico-triggers", "app.kubernetes.io/instance": "portico"}
    selector = {**labels, "app.kubernetes.io/component": "operator"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "portico-portico-triggers-operator", "namespace": namespace, "labels": selector},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "containers": [
                        {
                            "name": "operator",
                            "image": "portico/portico-triggers:test",
                            "args": ["operator", *(args or [])],
                            "env": [{"name": "PORTICO_QUEUE_URL", "value": queue_url}],
                        }
                    ]
                },
            },
        },
    }

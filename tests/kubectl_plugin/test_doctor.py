"""The parts of `doctor` that judge what the API returned, on hand-made objects."""

from __future__ import annotations

from types import SimpleNamespace as NS
from typing import Any

from portico.kubectl_plugin.doctor import Check, _pod_problem, _schema_drift, print_checks


def test_schema_drift_names_what_the_installed_crd_lacks_or_changes() -> None:
    expected = {
        "schema": {"properties": {"a": {"type": "string", "description": "x"}, "b": {"type": "integer"}}}
    }
    same = {
        "schema": {
            "properties": {"a": {"type": "string", "description": "other words"}, "b": {"type": "integer"}}
        }
    }
    assert _schema_drift(expected, same) == []
    older = {"schema": {"properties": {"a": {"type": "string"}}}}
    assert _schema_drift(expected, older) == [".schema.properties.b missing"]
    changed = {"schema": {"properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}
    assert _schema_drift(expected, changed) == [".schema.properties.a.type differs"]
    assert _schema_drift({"cols": [1, 2]}, {"cols": [1]}) == [".cols differs"]


def pod(**status: Any) -> Any:
    return NS(status=NS(**{"phase": "Running", "conditions": [], "container_statuses": None, **status}))


def container(ready: bool, restarts: int = 0, waiting: Any = None) -> Any:
    return NS(name="operator", ready=ready, restart_count=restarts, state=NS(waiting=waiting))


def test_pod_problems_say_why() -> None:
    unscheduled = NS(type="PodScheduled", status="False", reason="Unschedulable", message="0/3 nodes")
    assert _pod_problem(pod(phase="Pending", conditions=[unscheduled])) == (
        "Pending, not scheduled: Unschedulable 0/3 nodes"
    )
    crash = NS(reason="CrashLoopBackOff", message="back-off 5m0s")
    assert _pod_problem(pod(container_statuses=[container(False, 6, crash)])) == (
        "operator CrashLoopBackOff (restarts 6): back-off 5m0s"
    )
    assert _pod_problem(pod(container_statuses=[container(False)])) == "operator not ready (restarts 0)"
    assert _pod_problem(pod(container_statuses=[container(True, 4)])) == "operator restarted 4 times"
    assert _pod_problem(pod(container_statuses=[container(True)])) == ""


def test_exit_code_is_1_only_when_a_check_fails() -> None:
    import io

    ok, warn, fail = (
        Check("A", "ok", "fine"),
        Check("B", "warn", "meh"),
        Check("C", "fail", "bad", fix=["do x"]),
    )
    assert print_checks([ok, warn], None, io.StringIO()) == 0
    out = io.StringIO()
    assert print_checks([ok, fail], None, out) == 1
    assert "[FAIL] C: bad\n         fix: do x\n" in out.getvalue()

"""The GitOps material in examples/gitops: the Argo CD health check (run in Lua 5.1, the dialect Argo
CD's interpreter speaks) maps the statuses the operator writes to Argo CD health, and the Flux health
expressions name fields the status really has."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from portico.operator.resource_status import status_model
from portico.sources.catalog import SOURCE_CLASSES
from tests.conftest import EXAMPLES_DIR

GITOPS = EXAMPLES_DIR / "gitops"
HEALTH_KEY = "resource.customizations.health.triggers.portico.dev_JobTrigger"
JobTriggerStatus = status_model(SOURCE_CLASSES)
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC).isoformat().replace("+00:00", "Z")


def status(phase: str, ready: str, reason: str, message: str = "", **fields: Any) -> dict[str, Any]:
    """A status as the operator writes it; validated against the model the CRD is generated from."""
    body = {
        "phase": phase,
        "isRunning": phase == "Running",
        "source": "schedule",
        "observedGeneration": 2,
        "conditions": [
            {
                "type": "Ready",
                "status": ready,
                "reason": reason,
                "message": message,
                "lastTransitionTime": NOW,
            }
        ],
        **fields,
    }
    JobTriggerStatus.model_validate(body)
    return body


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lupa = pytest.importorskip("lupa.lua51", reason="lupa (test extra) runs the Lua health check")
    script = yaml.safe_load((GITOPS / "argocd-health-jobtrigger.yaml").read_text())["data"][HEALTH_KEY]
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    return str(result["status"]), str(result["message"])


def jobtrigger(generation: int = 2, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "triggers.portico.dev/v1alpha1",
        "kind": "JobTrigger",
        "metadata": {"name": "daily", "generation": generation},
        "spec": {},
    }
    if status is not None:
        obj["status"] = status
    return obj


@pytest.mark.parametrize(
    ("obj", "expected_status", "expected_message"),
    [
        (jobtrigger(status=None), "Progressing", "Waiting for the Portico operator"),
        (
            jobtrigger(generation=3, status=status("Running", "True", "Running", "next run at 09:00")),
            "Progressing",
            "generation 3",
        ),
        (
            jobtrigger(status=status("Pending", "False", "Starting", "connecting to the broker")),
            "Progressing",
            "connecting to the broker",
        ),
        (
            jobtrigger(status=status("Running", "True", "Running", "next run at 09:00")),
            "Healthy",
            "next run at 09:00",
        ),
        (jobtrigger(status=status("Running", "True", "Running")), "Healthy", "Running"),
        (jobtrigger(status=status("Suspended", "False", "Suspended")), "Suspended", "spec.suspend"),
        (
            jobtrigger(
                status=status(
                    "Failed",
                    "False",
                    "SecretNotFound",
                    "Secret 'gh' not found",
                    lastError="Secret 'gh' not found in namespace apps",
                )
            ),
            "Degraded",
            "Secret 'gh' not found in namespace apps",
        ),
        (
            jobtrigger(status=status("Failed", "False", "InvalidSpec", "spec.schedule.cron: bad")),
            "Degraded",
            "spec.schedule.cron: bad",
        ),
    ],
)
def test_argocd_health_check(obj: dict[str, Any], expected_status: str, expected_message: str) -> None:
    got_status, got_message = health(obj)
    assert got_status == expected_status
    assert expected_message in got_message


def test_flux_health_expressions_use_real_status_fields() -> None:
    docs = list(yaml.safe_load_all((GITOPS / "flux-helmrelease.yaml").read_text()))
    kustomization = next(d for d in docs if d["kind"] == "Kustomization" and "healthCheckExprs" in d["spec"])
    assert kustomization["spec"]["dependsOn"] == [{"name": "portico-operator"}]
    operator = next(
        d for d in docs if d["kind"] == "Kustomization" and d["metadata"]["name"] == "portico-operator"
    )
    assert operator["spec"]["wait"] is True
    fields = {f.alias or name for name, f in JobTriggerStatus.model_fields.items()}
    phases = set(JobTriggerStatus.model_fields["phase"].annotation.__args__[0].__args__)  # type: ignore[union-attr]
    (check,) = kustomization["spec"]["healthCheckExprs"]
    for key in ("current", "failed", "inProgress"):
        for field in re.findall(r"status\.(\w+)", check[key]):
            assert field in fields, f"{key}: status.{field} is not a status field"
        for phase in re.findall(r"'(\w+)'", check[key]):
            assert phase in phases, f"{key}: {phase!r} is not a phase"


def test_gitops_manifests_keep_the_token_out_of_lookup() -> None:
    """Argo CD and Flux render without cluster access, so `lookup` cannot keep a generated token."""
    for path in GITOPS.glob("*.yaml"):
        text = path.read_text()
        if "portico-triggers" in text and "queueService" in text:
            assert "existingSecret" in text, path.name

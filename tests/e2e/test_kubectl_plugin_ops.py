"""`kubectl portico describe` (whose signed curl must really pass the operator's webhook authentication)
and `kubectl portico doctor` (whose findings must match the state of a real control plane)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from portico.testing.control_plane import ControlPlane
from tests.conftest import Kubectl, QueueServiceProcess
from tests.e2e.conftest import OperatorFactory, list_jobs, status_of, trigger_manifest, wait_for
from tests.e2e.test_kubectl_plugin import PLUGIN, operator_deployment, plugin, running

SECRET = "s3cr3t 'quoted' $HOME \\ value"
SECRET_REF = {"name": "hook-secret", "key": "webhook.key"}
AUTHS = {
    "github": {"type": "hmac", "preset": "github", "secretRef": SECRET_REF},
    "stripe": {"type": "hmac", "preset": "stripe", "secretRef": SECRET_REF},
    "slack": {"type": "hmac", "preset": "slack", "secretRef": SECRET_REF},
    "bearer": {"type": "bearer", "secretRef": SECRET_REF},
    "hmac-sha512": {
        "type": "hmac",
        "header": "X-Signature",
        "prefix": "sha512=",
        "algorithm": "sha512",
        "secretRef": SECRET_REF,
    },
    "none": {"type": "none"},
}


def snippet(describe_output: str) -> str:
    """The shell lines under `Call it:`, dedented."""
    lines = describe_output.split("  Call it:\n", 1)[1].split("\nEvents:", 1)[0].splitlines()
    return "\n".join(line[4:] for line in lines)


def run_shell(script: str, kubectl: Kubectl) -> subprocess.CompletedProcess[str]:
    path = f"{kubectl.binary.parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": path, "KUBECONFIG": str(kubectl.kubeconfig)},
    )


def jobs_of(queue_url: str, name: str) -> list[dict[str, Any]]:
    return list_jobs(queue_url, metadata=f"trigger.name={name}")


@pytest.mark.parametrize("auth", list(AUTHS))
def test_describe_prints_a_curl_that_passes_the_webhooks_auth(
    auth: str,
    kubectl: Kubectl,
    control_plane: ControlPlane,
    start_operator: OperatorFactory,
    queue_service_process: QueueServiceProcess,
) -> None:
    op = start_operator()
    kubectl("create", "secret", "generic", SECRET_REF["name"], f"--from-literal={SECRET_REF['key']}={SECRET}")
    webhook: dict[str, Any] = {"auth": AUTHS[auth]}
    if auth == "github":
        webhook |= {
            "mode": "payload",
            "jobTypeFromHeader": {"header": "X-GitHub-Event", "mapping": {"push": "ci.build"}},
        }
    kubectl.apply(trigger_manifest("hook", {"webhook": webhook}))
    wait_for(lambda: running(kubectl, "hook"), message="webhook running")
    ns = kubectl.namespace

    body = ["--body", '{"n": 1}'] if auth == "github" else []
    proc = plugin(control_plane, ns, "describe", "hook", "--webhook-url", op.webhook_url, *body)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"  {'URL:':<22}{op.webhook_url}/hooks/{ns}/hook\n" in out
    assert "Phase:" in out and "Ready" in out and "Events:" in out
    assert SECRET not in out and "'quoted'" not in out
    script = snippet(out)
    result = run_shell(script, kubectl)
    assert result.returncode == 0, f"{script}\n{result.stdout}\n{result.stderr}"
    jobs = wait_for(lambda: jobs_of(queue_service_process.url, "hook"), message="a job")
    assert len(jobs) == 1
    if auth == "github":
        assert jobs[0]["job_type"] == "ci.build" and jobs[0]["payload"] == {"n": 1}
    else:
        assert jobs[0]["job_type"] == "e2e.job"

    shown = plugin(control_plane, ns, "describe", "hook", "--webhook-url", op.webhook_url, "--show-secret")
    inline = snippet(shown.stdout)
    if auth != "none":
        assert "kubectl" not in inline and "SECRET=" in inline
        assert run_shell(inline, kubectl).returncode == 0
        wrong = run_shell(inline.replace("SECRET=", "SECRET=wrong", 1), kubectl)
        assert wrong.returncode == 22, wrong.stdout  # curl --fail-with-body: the webhook answered 401
        assert len(jobs_of(queue_service_process.url, "hook")) == 2


def test_describe_shows_status_conditions_and_events(
    kubectl: Kubectl, control_plane: ControlPlane, start_operator: OperatorFactory
) -> None:
    start_operator()
    kubectl.apply(trigger_manifest("daily", {"schedule": {"cron": "0 9 * * *", "timeZone": "Europe/Berlin"}}))
    wait_for(lambda: running(kubectl, "daily"), message="running")
    wait_for(
        lambda: "Started" in plugin(control_plane, kubectl.namespace, "describe", "daily").stdout,
        message="the Started event in describe",
    )
    out = plugin(control_plane, kubectl.namespace, "describe", "daily").stdout
    assert f"{'Source:':<24}schedule: 0 9 * * * (Europe/Berlin)\n" in out
    assert status_of(kubectl, "daily")["nextScheduleTime"] in out
    assert "Conditions:" in out and "Ready   True" in out
    assert "Webhook:" not in out
    gone = plugin(control_plane, kubectl.namespace, "describe", "nope")
    assert gone.returncode == 1 and "not found" in gone.stderr


def doctor(
    control_plane: ControlPlane, namespace: str, *extra: str, kubeconfig: Path | None = None
) -> tuple[int, dict[str, Any]]:
    args = ["doctor", "--operator-namespace", namespace, "-o", "json", *extra]
    if kubeconfig is None:
        proc = plugin(control_plane, namespace, *args)
    else:
        proc = subprocess.run(
            [str(PLUGIN), *args, "-n", namespace, "--kubeconfig", str(kubeconfig)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, {c["name"]: c for c in json.loads(proc.stdout)["checks"]}


def test_doctor_says_what_is_wrong_and_how_to_fix_it(
    kubectl: Kubectl,
    control_plane: ControlPlane,
    start_operator: OperatorFactory,
    queue_service_process: QueueServiceProcess,
    tmp_path: Path,
) -> None:
    ns = kubectl.namespace or ""
    code, checks = doctor(control_plane, ns)
    assert code == 1
    assert checks["CRD"]["verdict"] == "ok", checks["CRD"]
    assert (
        checks["Operator"]["verdict"] == "fail" and "no operator Deployment" in checks["Operator"]["summary"]
    )
    assert checks["Access"]["verdict"] == "ok"

    op = start_operator()
    deployment = operator_deployment(
        ns, queue_url=queue_service_process.url, args=["--lease-name=portico-operator"]
    )
    kubectl.apply(deployment)
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "operator-0", "labels": selector},
        "spec": {"containers": [{"name": "operator", "image": "portico/portico-triggers:test"}]},
    }
    kubectl.apply(pod)
    code, checks = wait_for(
        lambda: (r := doctor(control_plane, ns))[1]["Leader"]["verdict"] == "ok" and r, message="a leader"
    )
    assert code == 1
    operator = checks["Operator"]
    assert operator["verdict"] == "fail" and "0/1 ready" in operator["summary"]
    assert any("operator-0: Pending, not scheduled" in d for d in operator["details"])
    assert any("kubectl -n" in f for f in operator["fix"])
    assert "leads" in checks["Leader"]["summary"]
    assert checks["Queue service"]["verdict"] == "ok"
    assert f"deployment {ns}/" in checks["Queue service"]["summary"]

    kubectl("patch", "deployment", deployment["metadata"]["name"], "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"replicas": 1, "readyReplicas": 1}}))  # fmt: skip
    ready_status = {
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [
                {
                    "name": "operator",
                    "ready": True,
                    "restartCount": 0,
                    "image": "portico/portico-triggers:test",
                    "imageID": "",
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                }
            ],
        }
    }
    kubectl(
        "patch", "pod", "operator-0", "--subresource=status", "--type=merge", "-p", json.dumps(ready_status)
    )
    code, checks = doctor(control_plane, ns)
    assert code == 0, checks
    assert {c["verdict"] for c in checks.values()} == {"ok"}

    op.process.stop()  # a graceful stop hands the Lease back: nobody leads
    code, checks = doctor(control_plane, ns)
    assert code == 1 and checks["Leader"]["verdict"] == "fail"
    assert "held by nobody" in checks["Leader"]["summary"]
    code, checks = doctor(control_plane, ns, "--queue-url", "http://127.0.0.1:9")
    assert checks["Queue service"]["verdict"] == "fail" and checks["Queue service"]["fix"]

    text = plugin(control_plane, ns, "doctor", "--operator-namespace", ns).stdout
    assert "[FAIL] Leader:" in text and "fix:" in text

    nobody = control_plane.service_account_kubeconfig(ns, "nobody", tmp_path / "nobody.kubeconfig")
    code, checks = doctor(control_plane, ns, kubeconfig=nobody)
    assert code == 1
    access = checks["Access"]
    assert access["verdict"] == "fail" and "you cannot list jobtriggers" in access["summary"]
    assert "rolebinding" in access["fix"][0]

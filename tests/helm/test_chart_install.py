"""`helm install` into a real kube-apiserver, and proof that the chart's RBAC is enough (and no more):
the operator runs with a token of the chart's ServiceAccount and goes through a trigger's life.

The control plane has no kubelet or controllers, so pods never run: the objects must be accepted and
the CRD established. The operator runs as a local process instead, authenticated as the ServiceAccount.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from portico.testing.control_plane import ControlPlane
from tests.conftest import Kubectl
from tests.helm.conftest import CHART_DIR, FORBIDDEN, Helm, set_args

pytestmark = pytest.mark.e2e

CRD = "jobtriggers.triggers.portico.dev"
RELEASE = "portico"
RELEASE_NS = "portico-system"
SA = "portico-portico-triggers-operator"
FAR_FUTURE = {"cron": "0 0 1 1 *"}
# Kopf words a refused watch as "Not enough permissions" and carries on with less: that counts too.


def manifest_objects(helm: Helm, release: str, namespace: str) -> list[dict[str, Any]]:
    out = helm("get", "manifest", release, "--namespace", namespace).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def trigger(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "triggers.portico.dev/v1alpha1",
        "kind": "JobTrigger",
        "metadata": {"name": name},
        "spec": {"job": {"type": "chart.smoke"}, "schedule": FAR_FUTURE},
    }


def events_for(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    return list(kubectl.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"])


@pytest.fixture(scope="module")
def cluster_release(chart_helm: Helm, chart_kubectl: Kubectl) -> Iterator[str]:
    """The chart installed cluster-wide with the bundled queue service and a generated token."""
    chart_helm(
        "install",
        RELEASE,
        str(CHART_DIR),
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        *set_args({"queueService.enabled": True, "queueService.token.create": True}),
    )
    yield RELEASE


def test_install_creates_every_object_and_establishes_the_crd(
    cluster_release: str, chart_helm: Helm, chart_kubectl: Kubectl
) -> None:
    chart_kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD}")
    objects = manifest_objects(chart_helm, cluster_release, RELEASE_NS)
    kinds = {o["kind"] for o in objects}
    assert kinds >= {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "Secret",
    }
    for obj in objects:
        namespace = obj["metadata"].get("namespace")
        args = ["get", obj["kind"], obj["metadata"]["name"], "-o", "name"]
        if namespace:
            args += ["--namespace", namespace]
        assert chart_kubectl(*args).stdout.strip(), obj["metadata"]["name"]
    resources = chart_kubectl("api-resources", "--api-group=triggers.portico.dev", "-o", "name").stdout
    assert "jobtriggers.triggers.portico.dev" in resources
    status = json.loads(chart_helm("status", cluster_release, "--namespace", RELEASE_NS, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"


def test_upgrade_updates_the_crd_and_keeps_the_generated_token(
    cluster_release: str, chart_helm: Helm, chart_kubectl: Kubectl, tmp_path: Path
) -> None:
    """CRDs in a chart's crds/ folder are never upgraded by Helm; ours is a template, so they are."""
    token_before = chart_kubectl.json(
        "get", "secret", "-n", RELEASE_NS, "portico-portico-triggers-queue-token"
    )
    older = tmp_path / "chart"
    shutil.copytree(CHART_DIR, older)
    template = older / "templates" / "jobtrigger-crd.yaml"
    text = template.read_text()
    assert "\n    - jt\n" in text
    template.write_text(text.replace("\n    - jt\n", "\n    - jt\n    - jtold\n"))
    values = set_args({"queueService.enabled": True, "queueService.token.create": True})

    chart_helm("upgrade", cluster_release, str(older), "--namespace", RELEASE_NS, *values)
    assert chart_kubectl.json("get", "crd", CRD)["spec"]["names"]["shortNames"] == ["jt", "jtold"]
    chart_helm("upgrade", cluster_release, str(CHART_DIR), "--namespace", RELEASE_NS, *values)
    assert chart_kubectl.json("get", "crd", CRD)["spec"]["names"]["shortNames"] == ["jt"]

    token_after = chart_kubectl.json(
        "get", "secret", "-n", RELEASE_NS, "portico-portico-triggers-queue-token"
    )
    assert token_after["data"] == token_before["data"]


def test_cluster_wide_operator_runs_with_the_chart_rbac(
    cluster_release: str,
    chart_cluster: ControlPlane,
    chart_helm: Helm,
    chart_kubectl: Kubectl,
    start_chart_operator: Callable[..., Any],
    tmp_path: Path,
) -> None:
    kubeconfig = chart_cluster.service_account_kubeconfig(RELEASE_NS, SA, tmp_path / "sa.kubeconfig")
    namespace = f"apps-{uuid.uuid4().hex[:6]}"
    chart_cluster.ensure_namespace(namespace)
    kubectl = chart_kubectl.in_namespace(namespace)
    objects = manifest_objects(chart_helm, cluster_release, RELEASE_NS)
    op = start_chart_operator(kubeconfig, objects, pod_namespace=RELEASE_NS)
    op.process.wait_for_log(r"became the leader", timeout=30)
    lifecycle(kubectl, "smoke")
    log = op.log()
    assert not FORBIDDEN.search(log), log[-4000:]
    lease = chart_kubectl.json("get", "lease", "-n", RELEASE_NS, SA)
    assert lease["spec"]["holderIdentity"] == "operator-0"


def test_kubernetes_job_target_needs_and_gets_the_jobs_value(
    cluster_release: str,
    chart_cluster: ControlPlane,
    chart_helm: Helm,
    chart_kubectl: Kubectl,
    start_chart_operator: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """Without rbac.kubernetesJobs the target's Job is refused (403, in the trigger's status); with it,
    the chart's ServiceAccount creates the Job."""
    from tests.e2e.conftest import status_of, wait_for

    kubeconfig = chart_cluster.service_account_kubeconfig(RELEASE_NS, SA, tmp_path / "sa.kubeconfig")
    namespace = f"jobs-{uuid.uuid4().hex[:6]}"
    chart_cluster.ensure_namespace(namespace)
    kubectl = chart_kubectl.in_namespace(namespace)
    op = start_chart_operator(
        kubeconfig, manifest_objects(chart_helm, cluster_release, RELEASE_NS), pod_namespace=RELEASE_NS
    )
    op.process.wait_for_log(r"became the leader", timeout=30)
    manifest = trigger("deploy")
    manifest["spec"] = {
        "job": {"type": "chart.deploy"},
        "schedule": {"cron": "@every 1s"},
        "target": {
            "kubernetesJob": {
                "jobTemplate": {
                    "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}}
                }
            }
        },
    }
    kubectl.apply(manifest)
    wait_for(
        lambda: "403" in (status_of(kubectl, "deploy").get("lastError") or ""),
        message="refused without the value",
    )
    assert kubectl.json("get", "jobs.batch")["items"] == []
    upgrade = ("upgrade", cluster_release, str(CHART_DIR), "--namespace", RELEASE_NS, "--reuse-values")
    chart_helm(*upgrade, "--set", "rbac.kubernetesJobs=true")
    try:
        wait_for(
            lambda: kubectl.json("get", "jobs.batch")["items"], timeout=30, message="a Job with the value"
        )
    finally:
        kubectl("delete", "jt", "deploy")
        chart_helm(*upgrade, "--set", "rbac.kubernetesJobs=false")


def test_namespaced_operator_cannot_read_secrets_elsewhere(
    cluster_release: str,
    chart_cluster: ControlPlane,
    chart_helm: Helm,
    chart_kubectl: Kubectl,
    start_chart_operator: Callable[..., Any],
    tmp_path: Path,
) -> None:
    team, other, release_ns = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("team", "other", "team-system"))
    for ns in (team, other):
        chart_cluster.ensure_namespace(ns)
    chart_helm(
        "install",
        "team",
        str(CHART_DIR),
        "--namespace",
        release_ns,
        "--create-namespace",
        *set_args(
            {"crds.enabled": False, "watchNamespaces": [team], "queueService.url": "http://queue:8000"}
        ),
    )
    sa = "team-portico-triggers-operator"
    kubeconfig = chart_cluster.service_account_kubeconfig(release_ns, sa, tmp_path / "team.kubeconfig")
    as_operator = Kubectl(chart_kubectl.binary, kubeconfig)
    chart_kubectl.in_namespace(other).apply(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "not-yours"}, "stringData": {"k": "v"}}
    )

    def can_i(*args: str) -> str:
        return as_operator("auth", "can-i", *args, check=False).stdout.strip()

    assert can_i("get", "secrets", "-n", team) == "yes"
    assert can_i("watch", "secrets", "-n", team) == "yes"
    assert can_i("get", "secrets", "-n", other) == "no"
    assert can_i("list", "secrets", "--all-namespaces") == "no"
    assert can_i("list", "jobtriggers.triggers.portico.dev", "-n", other) == "no"
    assert can_i("create", "secrets", "-n", team) == "no"
    denied = as_operator("get", "secret", "not-yours", "-n", other, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()

    op = start_chart_operator(
        kubeconfig, manifest_objects(chart_helm, "team", release_ns), pod_namespace=release_ns
    )
    op.process.wait_for_log(r"became the leader", timeout=30)
    lifecycle(chart_kubectl.in_namespace(team), "team-smoke")
    log = op.log()
    assert not FORBIDDEN.search(log), log[-4000:]


def test_uninstall_keeps_the_crd_and_the_triggers(
    cluster_release: str, chart_helm: Helm, chart_kubectl: Kubectl, chart_cluster: ControlPlane
) -> None:
    namespace = f"kept-{uuid.uuid4().hex[:6]}"
    chart_cluster.ensure_namespace(namespace)
    kubectl = chart_kubectl.in_namespace(namespace)
    kubectl.apply(trigger("survivor"))
    chart_helm("uninstall", cluster_release, "--namespace", RELEASE_NS)
    assert chart_kubectl("get", "crd", CRD, check=False).returncode == 0
    assert kubectl("get", "jt", "survivor", check=False).returncode == 0
    assert chart_kubectl("get", "clusterrole", SA, check=False).returncode != 0
    # Reinstalling the same release adopts the kept CRD.
    chart_helm(
        "install",
        cluster_release,
        str(CHART_DIR),
        "--namespace",
        RELEASE_NS,
        *set_args({"queueService.url": "http://queue:8000"}),
    )
    chart_kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD}")


def lifecycle(kubectl: Kubectl, name: str) -> None:
    """Create, see status written and an Event posted, delete (the finalizer is released); and a
    trigger that reads a Secret (a webhook with an HMAC key) runs too."""
    from tests.e2e.conftest import status_of, wait_for

    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-hmac"},
            "stringData": {"secret": "s3cret-value"},
        }
    )
    hook = trigger(f"{name}-hook")
    hook["spec"] = {
        "job": {"type": "chart.hook"},
        "webhook": {
            "auth": {
                "type": "hmac",
                "preset": "github",
                "secretRef": {"name": f"{name}-hmac", "key": "secret"},
            }
        },
    }
    kubectl.apply(hook)
    wait_for(
        lambda: status_of(kubectl, f"{name}-hook").get("phase") == "Running",
        timeout=60,
        message=f"{name}-hook Running (it reads its Secret)",
    )
    kubectl("delete", "jt", f"{name}-hook", "--wait=true", "--timeout=60s")

    kubectl.apply(trigger(name))
    status = wait_for(
        lambda: (s := status_of(kubectl, name)).get("phase") == "Running" and s,
        timeout=60,
        message=f"{name} Running",
    )
    assert status["isRunning"] is True and status["source"] == "schedule"
    assert status["conditions"][0]["type"] == "Ready" and status["conditions"][0]["status"] == "True"
    wait_for(lambda: events_for(kubectl, name), timeout=30, message=f"an Event on {name}")
    assert kubectl.json("get", "jt", name)["metadata"]["finalizers"]
    kubectl("delete", "jt", name, "--wait=true", "--timeout=60s")
    assert kubectl("get", "jt", name, check=False).returncode != 0

"""The test control plane is real: CRDs register, resources and their status round-trip, RBAC is
enforced, and nothing is left running."""

import json
import os
import time
import urllib.error
from pathlib import Path

import pytest

from portico.testing.control_plane import ControlPlane
from tests.conftest import Kubectl

MINIMAL_TRIGGER = {
    "apiVersion": "triggers.portico.dev/v1alpha1",
    "kind": "JobTrigger",
    "metadata": {"name": "smoke"},
    "spec": {"job": {"type": "smoke.test"}, "schedule": {"cron": "0 9 * * *"}},
}


def test_crd_registers_and_resource_round_trips(kubectl: Kubectl) -> None:
    assert "jobtriggers.triggers.portico.dev" in kubectl("get", "crd", "-o", "name").stdout
    kubectl.apply(MINIMAL_TRIGGER)
    got = kubectl.json("get", "jobtrigger", "smoke")
    assert got["spec"]["job"]["type"] == "smoke.test"
    assert got["spec"]["schedule"]["cron"] == "0 9 * * *"


def test_status_subresource_patch(kubectl: Kubectl) -> None:
    kubectl.apply(MINIMAL_TRIGGER)
    patch = {"status": {"phase": "Running", "isRunning": True}}
    kubectl("patch", "jobtrigger", "smoke", "--subresource=status", "--type=merge", "-p", json.dumps(patch))
    status = kubectl.json("get", "jt", "smoke")["status"]
    assert status["phase"] == "Running"
    assert status["isRunning"] is True
    # The main resource endpoint ignores status: only /status may change it.
    kubectl("patch", "jobtrigger", "smoke", "--type=merge", "-p", json.dumps({"status": {"phase": "Failed"}}))
    assert kubectl.json("get", "jt", "smoke")["status"]["phase"] == "Running"


def test_service_account_without_rbac_is_refused(
    control_plane: ControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = control_plane.service_account_kubeconfig(namespace, "nobody", tmp_path / "sa.kubeconfig")
    as_sa = Kubectl(kubectl.binary, kubeconfig, namespace)
    denied = as_sa("get", "secrets", check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert "system:serviceaccount:" + namespace + ":nobody" in denied.stderr

    token = json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]
    with pytest.raises(urllib.error.HTTPError) as exc:
        control_plane.request("GET", f"/api/v1/namespaces/{namespace}/secrets", token=token)
    assert exc.value.code == 403

    # Granting exactly that permission makes the same request succeed.
    kubectl.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "read-secrets"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
        }
    )
    kubectl.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "read-secrets"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-secrets"},
            "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}],
        }
    )
    assert as_sa("get", "secrets").returncode == 0


async def test_async_client_reads_the_cluster(kube_api: object) -> None:
    from kubernetes_asyncio import client

    version = await client.VersionApi(kube_api).get_code()
    assert version.major == "1"
    namespaces = await client.CoreV1Api(kube_api).list_namespace()
    assert "default" in {ns.metadata.name for ns in namespaces.items}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_stop_leaves_no_process_behind(control_plane_bin: Path, tmp_path: Path) -> None:
    cp = ControlPlane(bin_dir=control_plane_bin, data_dir=tmp_path / "cp")
    with cp:
        pids = cp.pids
        assert len(pids) == 2
        assert all(_alive(pid) for pid in pids)
        assert cp.request("GET", "/version")["gitVersion"].startswith("v1.")
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids), "etcd or kube-apiserver still running after stop()"


def test_failed_start_leaves_no_process_behind(control_plane_bin: Path, tmp_path: Path) -> None:
    cp = ControlPlane(
        bin_dir=control_plane_bin,
        data_dir=tmp_path / "cp",
        ready_timeout=30,
        extra_apiserver_args=["--this-flag-does-not-exist"],
    )
    with pytest.raises(RuntimeError, match="kube-apiserver exited"):
        cp.start()
    assert cp.processes == {}

"""Fixtures shared by the whole suite: a real Kubernetes control plane, per-test namespaces, a kubectl
bound to it, and an async Kubernetes client."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from portico.testing.control_plane import ControlPlane, find_binaries

REPO_ROOT = Path(__file__).resolve().parent.parent
CRDS_DIR = REPO_ROOT / "crds"
EXAMPLES_DIR = REPO_ROOT / "examples"


@dataclass(frozen=True)
class Kubectl:
    """`kubectl` bound to a kubeconfig (and optionally a namespace)."""

    binary: Path
    kubeconfig: Path
    namespace: str | None = None

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.binary), f"--kubeconfig={self.kubeconfig}"]
        if self.namespace:
            cmd.append(f"--namespace={self.namespace}")
        proc = subprocess.run(
            [*cmd, *args], input=input, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json").stdout)

    def apply(self, manifest: str | dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self("apply", "-f", "-", *extra, input=text)

    def in_namespace(self, namespace: str) -> Kubectl:
        return replace(self, namespace=namespace)


@pytest.fixture(scope="session")
def control_plane_bin() -> Path:
    return find_binaries(REPO_ROOT)


@pytest.fixture(scope="session")
def control_plane(control_plane_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """One real etcd + kube-apiserver for the whole session, with the project's CRDs applied."""
    cp = ControlPlane(bin_dir=control_plane_bin, data_dir=tmp_path_factory.mktemp("control-plane"))
    cp.start()
    try:
        admin = Kubectl(control_plane_bin / "kubectl", cp.kubeconfig)
        if any(CRDS_DIR.glob("*.yaml")):
            admin("apply", "--server-side", "-f", str(CRDS_DIR))
            admin("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kubectl_admin(control_plane: ControlPlane, control_plane_bin: Path) -> Kubectl:
    return Kubectl(control_plane_bin / "kubectl", control_plane.kubeconfig)


@pytest.fixture
def namespace(control_plane: ControlPlane) -> str:
    """A fresh namespace per test. (Deletion never completes without a controller-manager, so names
    are unique rather than reused.)"""
    name = f"t-{uuid.uuid4().hex[:10]}"
    control_plane.ensure_namespace(name)
    return name


@pytest.fixture
def kubectl(kubectl_admin: Kubectl, namespace: str) -> Kubectl:
    return kubectl_admin.in_namespace(namespace)


@pytest.fixture
async def kube_api(control_plane: ControlPlane) -> AsyncIterator[Any]:
    """A kubernetes-asyncio ApiClient with admin rights."""
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(control_plane.kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture
def kubeconfig_env(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    return control_plane.kubeconfig


def pytest_report_header(config: pytest.Config) -> str:
    return f"portico control plane binaries: {os.environ.get('PORTICO_CONTROL_PLANE_BIN', '(built on demand)')}"

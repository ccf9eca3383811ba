"""Chart fixtures: the helm binary (installed by `make helm` from hack/install-helm.sh), rendering the
chart into objects, and a control plane of its own, so that installing the chart (CRD, ClusterRoles,
a cluster-wide operator) cannot disturb the rest of the suite's shared control plane."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from portico.testing.control_plane import ControlPlane
from tests.conftest import REPO_ROOT, Kubectl

FORBIDDEN = re.compile(r"(?<![,.:])\b403\b|forbidden|not enough permissions", re.IGNORECASE)
"""A refusal in the operator's log; `,403` or `.403` is a timestamp's milliseconds, not a status."""

CHART_DIR = REPO_ROOT / "helm" / "portico-triggers"
QUEUE_URL = "http://queue.jobs.svc:8000"


def find_helm() -> Path | None:
    """PORTICO_HELM, then the repository's .cache/bin/helm (hack/install-helm.sh), then PATH."""
    candidates = [
        os.environ.get("PORTICO_HELM"),
        str(REPO_ROOT / ".cache" / "bin" / "helm"),
        shutil.which("helm"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def find_promtool() -> Path | None:
    """PORTICO_PROMTOOL, then the repository's .cache/bin/promtool (hack/install-promtool.sh), then PATH."""
    for candidate in (
        os.environ.get("PORTICO_PROMTOOL"),
        str(REPO_ROOT / ".cache" / "bin" / "promtool"),
        shutil.which("promtool"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def promtool() -> Path:
    binary = find_promtool()
    if binary is None:
        pytest.fail(
            "promtool not found: run `make promtool` (hack/install-promtool.sh) or set PORTICO_PROMTOOL",
            pytrace=False,
        )
    return binary


@dataclass(frozen=True)
class Helm:
    binary: Path
    home: Path
    kubeconfig: Path | None = None

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        cmd = [str(self.binary), *args]
        if self.kubeconfig is not None:
            cmd.append(f"--kubeconfig={self.kubeconfig}")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def bound_to(self, kubeconfig: Path) -> Helm:
        return Helm(self.binary, self.home, kubeconfig)


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = find_helm()
    if binary is None:
        pytest.fail(
            "helm not found: run `make helm` (hack/install-helm.sh) or set PORTICO_HELM", pytrace=False
        )
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))


def set_args(values: dict[str, Any]) -> list[str]:
    """`--set-json key=value` arguments for a flat mapping of dotted keys."""
    import json

    return [arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render(helm: Helm) -> Render:
    """`helm template` with the given values (dotted keys), parsed into a list of objects."""

    def render(
        release: str = "portico", namespace: str = "portico-system", **values: Any
    ) -> list[dict[str, Any]]:
        values = {"queueService.url": QUEUE_URL, **values}
        out = helm("template", release, str(CHART_DIR), "--namespace", namespace, *set_args(values)).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    return render


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


@pytest.fixture(scope="module")
def chart_cluster(
    control_plane_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """A fresh control plane without the project's CRDs: the chart installs them itself."""
    cp = ControlPlane(bin_dir=control_plane_bin, data_dir=tmp_path_factory.mktemp("chart-cluster"))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def chart_kubectl(chart_cluster: ControlPlane, control_plane_bin: Path) -> Kubectl:
    return Kubectl(control_plane_bin / "kubectl", chart_cluster.kubeconfig)


@pytest.fixture(scope="module")
def chart_helm(helm: Helm, chart_cluster: ControlPlane) -> Helm:
    return helm.bound_to(chart_cluster.kubeconfig)


# --- The operator as the chart's ServiceAccount ------------------------------------------------------


@pytest.fixture
def queue_service_for_chart(tmp_path: Path) -> Iterator[Any]:
    from tests.conftest import QueueServiceProcess

    service = QueueServiceProcess(tmp_path / "queue.db", tmp_path / "queue-service.log")
    service.start()
    try:
        yield service
    finally:
        service.stop()


# Flags of the chart's Deployment that only make sense inside the pod; the test replaces them with
# free local ports, its own queue service and a text log.
POD_ONLY_FLAGS = (
    "--webhook-port",
    "--health-port",
    "--metrics-port",
    "--queue-token-file",
    "--log-format",
)


def deployment_args(objects: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """The operator container's arguments (without the command) and its plain environment values."""
    (deployment,) = [
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator")
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = [a for a in container["args"] if not a.startswith(POD_ONLY_FLAGS)]
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    return args, env


@pytest.fixture
def start_chart_operator(queue_service_for_chart: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Runs `portico operator` outside the cluster with the arguments of the chart's Deployment and a
    kubeconfig holding a token of the chart's ServiceAccount, so it has exactly the chart's RBAC."""
    from portico.testing.processes import free_port
    from tests.e2e.conftest import Operator, Process, wait_healthy

    started: list[Any] = []

    def start(kubeconfig: Path, objects: list[dict[str, Any]], *, pod_namespace: str) -> Any:
        args, env = deployment_args(objects)
        assert args[0] == "operator"
        env.pop("PORTICO_QUEUE_URL", None)
        env.update(
            {
                "PORTICO_LOG_FORMAT": "text",
                "POD_NAME": f"operator-{len(started)}",
                "POD_NAMESPACE": pod_namespace,
            }
        )
        op = Operator(
            Process([], tmp_path / f"operator-{len(started)}.log", env=env),
            webhook_port=free_port(),
            health_port=free_port(),
            metrics_port=free_port(),
        )
        op.process.args = [
            sys.executable,
            "-m",
            "portico",
            *args,
            "--kubeconfig",
            str(kubeconfig),
            "--queue-url",
            queue_service_for_chart.url,
            "--webhook-host=127.0.0.1",
            f"--webhook-port={op.webhook_port}",
            "--health-host=127.0.0.1",
            f"--health-port={op.health_port}",
            "--metrics-host=127.0.0.1",
            f"--metrics-port={op.metrics_port}",
            "--log-format=text",
        ]
        op.process.start()
        started.append(op)
        wait_healthy(op)
        return op

    yield start
    for op in started:
        op.process.stop()

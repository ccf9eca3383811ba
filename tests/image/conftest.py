"""Image fixtures: a Docker daemon and the project image, both from the project's own scripts
(`hack/docker-daemon.sh`, `hack/build-image.sh`, cached, so only the first run builds), and `docker run`
with the security settings the chart gives its Pods.

Where no daemon can be started or the image cannot be built, every test here fails with the reason: the
image is what users run, so it is never skipped."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml
from tests.conftest import REPO_ROOT

# The chart's own control plane and helm, for the operator test that runs with the chart's RBAC.
from tests.helm.conftest import CHART_DIR, chart_cluster, chart_helm, chart_kubectl, helm

__all__ = ["chart_cluster", "chart_helm", "chart_kubectl", "helm"]

BUILD_TIMEOUT = 1800


def run_script(name: str, timeout: float) -> str:
    """The last line a hack/ script prints; on failure the test fails with the script's reason."""
    try:
        proc = subprocess.run(
            ["bash", str(REPO_ROOT / "hack" / name)], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"hack/{name} did not finish within {timeout:.0f}s", pytrace=False)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        reasons = [line for line in proc.stderr.splitlines() if line.strip()]
        reason = reasons[-1] if reasons else f"exit status {proc.returncode}, no output"
        pytest.fail(f"hack/{name} failed: {reason}", pytrace=False)
    return lines[-1].strip()


def chart_run_flags() -> list[str]:
    """`docker run` flags equivalent to the chart's pod and container security contexts, read from the
    chart's values so that a change there changes what these tests run."""
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    pod, container = values["podSecurityContext"], values["securityContext"]
    assert pod["runAsNonRoot"] and container["runAsNonRoot"]
    flags = ["--user", f"{pod['runAsUser']}:{pod['runAsGroup']}", "--group-add", str(pod["fsGroup"])]
    assert container["readOnlyRootFilesystem"] is True
    # The chart mounts an emptyDir on /tmp (the only writable path of the operator's Pod).
    flags += ["--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev,size=64m"]
    assert container["capabilities"]["drop"] == ["ALL"]
    flags += ["--cap-drop", "ALL"]
    assert container["allowPrivilegeEscalation"] is False
    flags += ["--security-opt", "no-new-privileges"]
    return [*flags, "--network", "host"]


@dataclass(frozen=True)
class Docker:
    """The docker client bound to the test daemon."""

    host: str

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_HOST": self.host}
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=env)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def inspect(self, name: str) -> dict[str, Any]:
        result: list[dict[str, Any]] = json.loads(self("inspect", name).stdout)
        return result[0]

    def logs(self, name: str) -> str:
        proc = self("logs", name, check=False)
        return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def docker() -> Docker:
    return Docker(run_script("docker-daemon.sh", timeout=600))


@pytest.fixture(scope="session")
def image(docker: Docker) -> str:
    """The project image built from the Dockerfile (cached: instant when nothing changed)."""
    return run_script("build-image.sh", timeout=BUILD_TIMEOUT)


@dataclass
class Containers:
    """Containers started by one test, run like the chart's Pods; removed at the end."""

    docker: Docker
    image: str
    names: list[str] = field(default_factory=list)

    def run(self, *args: str, options: tuple[str, ...] = (), detach: bool = True) -> str:
        """`docker run` of the image with `args`; returns the container name (detached) or stdout."""
        name = f"portico-test-{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        proc = self.docker(
            "run", *(["--detach"] if detach else []), "--name", name, *chart_run_flags(), *options,
            self.image, *args, check=detach,
        )  # fmt: skip
        return name if detach else proc.stdout

    def oneshot(self, *args: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        """Run to completion; the finished process (exit status and output)."""
        name = f"portico-test-{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        return self.docker(
            "run", "--name", name, *chart_run_flags(), *options, self.image, *args, check=False
        )

    def stop(self, name: str, timeout: int = 30) -> int:
        """SIGTERM, as the kubelet sends it, then the exit status once the container ended."""
        self.docker("stop", "--time", str(timeout), name, timeout=timeout + 30)
        code: int = self.docker.inspect(name)["State"]["ExitCode"]
        return code

    def remove_all(self) -> None:
        for name in self.names:
            self.docker("rm", "--force", "--volumes", name, check=False)


@pytest.fixture
def containers(docker: Docker, image: str) -> Iterator[Containers]:
    started = Containers(docker, image)
    try:
        yield started
    finally:
        started.remove_all()


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def wait_http(url: str, docker: Docker, container: str, timeout: float = 60) -> str:
    """Poll `url` like a kubelet probe until it answers 200; fail with the container's log if it exits."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            status, body = http_get(url, timeout=2)
            if status == 200:
                return body
            last = f"{status} {body[:200]}"
        if not docker.inspect(container)["State"]["Running"]:
            raise AssertionError(f"{container} exited:\n{docker.logs(container)[-4000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{url} not 200 within {timeout}s ({last}):\n{docker.logs(container)[-4000:]}")

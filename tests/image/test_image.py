"""The image built from the Dockerfile, run the way the chart runs it: UID 65532 without a passwd entry,
a read-only root with an emptyDir-like /tmp, every capability dropped, no privilege escalation.

The operator container reaches the test control plane as the chart's ServiceAccount (a kubeconfig, or
the mounted token a Pod gets), creates jobs in a queue service from a fast schedule, answers its probes
and /metrics, and stops cleanly on SIGTERM. The queue-service container keeps its database on a mounted
volume across a restart."""

from __future__ import annotations

import json
import os
import re
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.conftest import EXAMPLES_DIR, NO_PASSWD_UID, Kubectl, QueueServiceProcess
from tests.e2e.conftest import list_jobs, status_of, trigger_manifest, wait_for
from tests.helm.conftest import CHART_DIR, FORBIDDEN, Helm, deployment_args, set_args
from tests.image.conftest import Containers, Docker, http_get, wait_http

from portico import __version__
from portico.testing.control_plane import ControlPlane
from portico.testing.processes import free_port

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]

RELEASE = "img"
RELEASE_NS = "img-system"
SERVICE_ACCOUNT = "img-portico-triggers-operator"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def readable_dir(path: Path) -> Path:
    """A directory the container's user can read (pytest's temporary directories are private)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def test_version(containers: Containers) -> None:
    out = containers.run("--version", detach=False)
    assert out.strip() == f"portico {__version__}"


def test_validate_the_examples_and_reject_a_bad_manifest(containers: Containers, tmp_path: Path) -> None:
    good = containers.oneshot(
        "validate", "-f", "/examples", options=("--volume", f"{EXAMPLES_DIR}:/examples:ro")
    )
    assert good.returncode == 0, good.stdout + good.stderr
    checked = re.search(r"(\d+) JobTrigger\(s\) checked, 0 invalid", good.stdout)
    assert checked and int(checked.group(1)) >= 5, good.stdout

    bad_dir = readable_dir(tmp_path / "bad")
    (bad_dir / "bad.yaml").write_text(
        "apiVersion: triggers.portico.dev/v1alpha1\nkind: JobTrigger\nmetadata: {name: broken}\n"
        "spec: {job: {type: x}, schedule: {cron: '61 * * * *'}}\n"
    )
    (bad_dir / "bad.yaml").chmod(0o644)
    bad = containers.oneshot("validate", "-f", "/in", options=("--volume", f"{bad_dir}:/in:ro"))
    assert bad.returncode == 1
    assert "JobTrigger/broken" in bad.stdout and "Traceback" not in bad.stderr


def test_image_size_is_reported(docker: Docker, image: str, capsys: pytest.CaptureFixture[str]) -> None:
    size = int(docker.inspect(image)["Size"])
    with capsys.disabled():
        print(f"\nimage {image}: {size / 1e6:.0f} MB")
    # The final stage holds the virtualenv and the base only; a build stage or compiler would double it.
    assert size < 500e6, f"the image is {size / 1e6:.0f} MB"


@pytest.fixture(scope="module")
def release(chart_helm: Helm) -> str:
    chart_helm(
        "install", RELEASE, str(CHART_DIR), "--namespace", RELEASE_NS, "--create-namespace",
        *set_args({"queueService.url": "http://queue.invalid:8000"}),
    )  # fmt: skip
    return RELEASE


def access_options(access: str, cluster: ControlPlane, tmp_path: Path) -> tuple[list[str], list[str]]:
    """`docker run` options and operator arguments for reaching the API server as the chart's
    ServiceAccount: a mounted kubeconfig, or the token, CA and service address a Pod gets."""
    kubeconfig = cluster.service_account_kubeconfig(
        RELEASE_NS, SERVICE_ACCOUNT, readable_dir(tmp_path / "kube") / "config", portable=True
    )
    if access == "kubeconfig":
        mount = f"{kubeconfig}:/etc/portico/kubeconfig:ro"
        return ["--volume", mount], ["--kubeconfig=/etc/portico/kubeconfig"]
    token = json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]
    account = readable_dir(tmp_path / "serviceaccount")
    (account / "token").write_text(token)
    (account / "ca.crt").write_bytes(cluster.ca_file.read_bytes())
    (account / "namespace").write_text(RELEASE_NS)
    for f in account.iterdir():
        f.chmod(0o644)
    return [
        "--volume", f"{account}:{SERVICE_ACCOUNT_DIR}:ro",
        "--env", "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "--env", f"KUBERNETES_SERVICE_PORT={cluster.api_port}",
    ], []  # fmt: skip


@pytest.mark.parametrize("access", ["kubeconfig", "service-account"])
def test_operator_creates_jobs_answers_probes_and_stops_on_sigterm(
    access: str,
    release: str,
    chart_cluster: ControlPlane,
    chart_helm: Helm,
    chart_kubectl: Kubectl,
    containers: Containers,
    docker: Docker,
    queue_service_process: QueueServiceProcess,
    tmp_path: Path,
) -> None:
    manifest = chart_helm("get", "manifest", release, "--namespace", RELEASE_NS).stdout
    args, env = deployment_args([doc for doc in yaml.safe_load_all(manifest) if doc])
    ports = {"webhook": free_port(), "health": free_port(), "metrics": free_port()}
    pod_name = f"img-operator-{uuid.uuid4().hex[:5]}"
    env.update(
        {"PORTICO_QUEUE_URL": queue_service_process.url, "POD_NAME": pod_name, "POD_NAMESPACE": RELEASE_NS}
    )
    options, extra_args = access_options(access, chart_cluster, tmp_path)
    for key, value in env.items():
        options += ["--env", f"{key}={value}"]
    operator = containers.run(
        *args,
        *(f"--{kind}-host=127.0.0.1" for kind in ports),
        *(f"--{kind}-port={port}" for kind, port in ports.items()),
        *extra_args,
        options=tuple(options),
    )
    health = f"http://127.0.0.1:{ports['health']}/healthz"
    wait_http(health, docker, operator)

    apps = f"img-apps-{uuid.uuid4().hex[:6]}"
    chart_cluster.ensure_namespace(apps)
    kubectl = chart_kubectl.in_namespace(apps)
    kubectl.apply(trigger_manifest("tick", {"schedule": {"cron": "@every 1s"}}, job={"type": "image.tick"}))

    def jobs() -> list[dict[str, Any]]:
        found = list_jobs(queue_service_process.url, job_type="image.tick")
        return [j for j in found if j["metadata"].get("trigger.namespace") == apps]

    try:
        created = wait_for(lambda: len(jobs()) >= 2 and jobs(), timeout=60, message="two scheduled jobs")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{docker.logs(operator)[-6000:]}") from None
    assert all(j["metadata"]["trigger.name"] == "tick" for j in created)
    status = wait_for(
        lambda: (s := status_of(kubectl, "tick")).get("jobsCreated", 0) >= 1 and s, message="jobsCreated"
    )
    assert status["phase"] == "Running" and status["isRunning"] is True

    status_code, _ = http_get(health)
    assert status_code == 200
    metrics = wait_http(f"http://127.0.0.1:{ports['metrics']}/metrics", docker, operator)
    assert re.search(r'portico_jobs_created_total\{[^}]*trigger="tick"[^}]*\} [1-9]', metrics), metrics[:2000]
    lease = chart_kubectl.json("get", "lease", "-n", RELEASE_NS, SERVICE_ACCOUNT)
    assert lease["spec"]["holderIdentity"] == pod_name

    assert containers.stop(operator) == 0, docker.logs(operator)[-4000:]
    log = docker.logs(operator)
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(entry["message"] == "operator stopped" for entry in lines), log[-4000:]
    assert "Traceback" not in log and "getpwuid" not in log, log[-4000:]
    assert not FORBIDDEN.search(log), log[-4000:]
    kubectl("delete", "jt", "tick", "--wait=false")


def test_queue_service_keeps_its_database_on_a_volume_across_a_restart(
    containers: Containers, docker: Docker, tmp_path: Path
) -> None:
    volume = tmp_path / "queue-data"
    volume.mkdir()
    if os.geteuid() == 0:
        os.chown(volume, NO_PASSWD_UID, NO_PASSWD_UID)  # what fsGroup does for the chart's PVC
        volume.chmod(0o700)
    else:
        volume.chmod(0o777)
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def start() -> str:
        name = containers.run(
            "queue-service", "--host=127.0.0.1", f"--port={port}", "--db=/var/lib/portico/queue.db",
            options=("--volume", f"{volume}:/var/lib/portico"),
        )  # fmt: skip
        wait_http(f"{url}/healthz", docker, name)
        return name

    def post(key: str) -> tuple[int, dict[str, Any]]:
        body = json.dumps({"job_type": "image.durable", "queue_name": "q", "payload": {"n": 1}}).encode()
        request = urllib.request.Request(
            f"{url}/v1/jobs",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())

    first = start()
    status, job = post("restart-1")
    assert status == 201
    assert containers.stop(first) == 0, docker.logs(first)[-4000:]
    assert (volume / "queue.db").stat().st_uid == (NO_PASSWD_UID if os.geteuid() == 0 else os.geteuid())

    second = start()
    status, stored = http_get(f"{url}/v1/jobs/{job['id']}")
    assert status == 200 and json.loads(stored)["id"] == job["id"]
    status, again = post("restart-1")
    assert (status, again["id"]) == (200, job["id"]), "the idempotency key survived the restart"
    assert containers.stop(second) == 0
    logs = docker.logs(first) + docker.logs(second)
    assert "Traceback" not in logs, logs[-4000:]


def test_a_daemon_that_cannot_be_reached_fails_the_tests_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.image.conftest import run_script

    monkeypatch.setenv("PORTICO_DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(pytest.fail.Exception) as failed:
        run_script("docker-daemon.sh", timeout=60)
    assert str(failed.value) == (
        "hack/docker-daemon.sh failed: docker-daemon: the Docker daemon at unix:///nonexistent/docker.sock "
        "does not answer (docker version failed)"
    )

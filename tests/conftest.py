"""Fixtures shared by the whole suite: a real Kubernetes control plane, per-test namespaces, a kubectl
bound to it, and an async Kubernetes client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
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
        proc = subprocess.run([*cmd, *args], input=input, capture_output=True, text=True, timeout=timeout)
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
def control_plane(
    control_plane_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """One real etcd + kube-apiserver for the whole session, with the project's CRDs applied."""
    cp = ControlPlane(bin_dir=control_plane_bin, data_dir=tmp_path_factory.mktemp("control-plane"))
    cp.start()
    try:
        admin = Kubectl(control_plane_bin / "kubectl", cp.kubeconfig)
        if any(CRDS_DIR.glob("*.yaml")):
            admin("apply", "--server-side", "-f", str(CRDS_DIR))
            # `kubectl wait` fails at once (instead of waiting) while a new CRD has no conditions yet.
            deadline = time.monotonic() + 60
            while admin(
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd",
                "--all",
                check=time.monotonic() > deadline,
            ).returncode:
                time.sleep(0.2)
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
    await config.load_kube_config(
        config_file=str(control_plane.kubeconfig), client_configuration=configuration
    )
    async with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture
def kubeconfig_env(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    return control_plane.kubeconfig


NO_PASSWD_UID = 65532
"""The image's user: numeric, with no passwd entry."""


def as_numeric_user(uid: int = NO_PASSWD_UID) -> tuple[list[str], dict[str, Any]]:
    """How to start this interpreter as `uid` without a passwd entry: a command prefix and `Popen`
    arguments. As root, `user=`/`group=` when that user can run the interpreter; otherwise (it may live
    in a home directory only its owner enters, or the tests do not run as root) a user namespace in
    which the child is `uid` and keeps this user's file access."""
    as_user: dict[str, Any] = {"user": uid, "group": uid, "extra_groups": []}
    if os.geteuid() == 0:
        try:
            probe = subprocess.run(
                [sys.executable, "-c", "import portico.cli"], capture_output=True, timeout=60, **as_user
            )
        except PermissionError:
            pass
        else:
            if probe.returncode == 0:
                return [], as_user
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail(
            f"cannot run a process as uid {uid}: not root, or the interpreter is private, and no unshare"
        )
    return [unshare, "--user", f"--map-user={uid}", f"--map-group={uid}", "--"], {}


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"portico control plane binaries: {os.environ.get('PORTICO_CONTROL_PLANE_BIN', '(built on demand)')}"
    )


# --- The reference queue service ---------------------------------------------------------------------
# `queue_service`: the real service in the test's event loop, on 127.0.0.1 (free port) with a temporary
# SQLite file; `.url` for an `HttpJobCreator`, `.list_jobs()` / `.get_job()` to see what arrived.
# `queue_service_factory(**settings)` starts more, with other settings (token, clock, ...).
# `queue_service_process`: `portico queue-service` as a subprocess, for tests that kill it.


@dataclass
class RunningQueueService:
    url: str
    settings: Any
    store: Any
    runner: Any
    stopped: bool = False

    async def list_jobs(self, **filters: str) -> list[Any]:
        """Every stored job in creation order; filters: queue_name, status, job_type."""
        from portico.ports.job_creator import Job

        jobs: list[Any] = []
        after: int | None = 0
        while after is not None:
            page, after = await self.store.list_jobs(after=after, limit=1000, **filters)
            jobs.extend(Job.model_validate_json(job) for job in page)
        return jobs

    async def get_job(self, job_id: str) -> Any:
        from portico.ports.job_creator import Job

        job = await self.store.get(job_id)
        return None if job is None else Job.model_validate_json(job)

    async def stop(self) -> None:
        """Stop serving (connections are refused afterwards). Idempotent."""
        if not self.stopped:
            self.stopped = True
            await self.runner.cleanup()


@pytest.fixture
async def queue_service_factory(tmp_path: Path) -> AsyncIterator[Any]:
    from aiohttp import web

    from portico.http_guard import GuardedRunner
    from portico.queue_service.server import SETTINGS, STORE, create_app
    from portico.queue_service.settings import QueueServiceSettings

    services: list[RunningQueueService] = []

    async def start(**settings: Any) -> RunningQueueService:
        settings.setdefault("db_path", str(tmp_path / f"queue-{len(services)}.db"))
        service_settings = QueueServiceSettings(**settings)
        app = create_app(service_settings)
        runner = GuardedRunner(
            app, limits=service_settings.limits, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        service = RunningQueueService(f"http://{host}:{port}", app[SETTINGS], app[STORE], runner)
        services.append(service)
        return service

    yield start
    for service in reversed(services):
        await service.stop()


@pytest.fixture
async def queue_service(queue_service_factory: Any) -> RunningQueueService:
    service: RunningQueueService = await queue_service_factory()
    return service


class QueueServiceProcess:
    """`portico queue-service` in a subprocess on a free port, with its database in `db_path`."""

    def __init__(self, db_path: Path, log_path: Path, *args: str) -> None:
        self.db_path = db_path
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout: float = 60) -> str:
        import select
        import sys
        import time

        command = [sys.executable, "-m", "portico", "queue-service", "--port", "0", "--db", str(self.db_path)]
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [*command, *self.args], stdout=subprocess.PIPE, stderr=log, text=True
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], deadline - time.monotonic())
            line = self.proc.stdout.readline() if ready else ""
            if "listening on " in line:
                self.url = line.split("listening on ", 1)[1].strip()
                return self.url
            if ready and not line:
                break
        self.kill()
        raise AssertionError(f"the queue service did not start; log:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._close_pipe()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def queue_service_process(tmp_path: Path) -> Iterator[QueueServiceProcess]:
    service = QueueServiceProcess(tmp_path / "queue.db", tmp_path / "queue-service.log")
    service.start()
    try:
        yield service
    finally:
        service.stop()


# --- RabbitMQ and PostgreSQL ------------------------------------------------------------------------------
# Real servers from the distribution's packages, on free loopback ports, one of each for the session.


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[Any]:
    """One broker for the session. Tests that restart it leave it running; each test uses its own queues."""
    from portico.testing.services import RabbitMQServer

    with RabbitMQServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis() -> Iterator[Any]:
    """One Redis server for the session (Debian's redis-server); tests use their own queue names."""
    from portico.testing.redis_server import RedisServer

    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """One PostgreSQL server for the session; each test uses its own tables."""
    from portico.testing.services import PostgresServer

    with PostgresServer() as server:
        yield server

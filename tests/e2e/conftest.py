"""End-to-end fixtures: the real operator (`portico operator`) and the real reference queue service as
processes, against the session's real kube-apiserver. Each operator watches only the test's namespace,
so tests never see each other's triggers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from portico.testing.control_plane import ControlPlane
from portico.testing.processes import die_with_parent, free_port, operator_command
from tests.conftest import Kubectl, QueueServiceProcess, as_numeric_user


@dataclass
class Process:
    """A child process with its output in a log file, stopped (SIGTERM, then SIGKILL) by the test."""

    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    drop_env: tuple[str, ...] = ()
    user: int | None = None
    """Run as this numeric user and group, without a passwd entry (`as_numeric_user`)."""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if k not in self.drop_env}
        prefix, as_user = ([], {}) if self.user is None else as_numeric_user(self.user)
        self.proc = subprocess.Popen(
            [*prefix, *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**env, **self.env},
            preexec_fn=die_with_parent,
            **as_user,
        )
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.log())
            if m:
                return m
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.args[:3]} exited with {self.proc.returncode}:\n{self.log()[-4000:]}"
                )
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen in {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def list_jobs(queue_url: str, **filters: str) -> list[dict[str, Any]]:
    """Every job in the queue service matching the filters, following cursor pagination."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**filters, "limit": "500", **({"cursor": cursor} if cursor else {})}
        with urllib.request.urlopen(
            f"{queue_url}/v1/jobs?{urllib.parse.urlencode(query)}", timeout=10
        ) as resp:
            page = json.loads(resp.read())
        out.extend(page["jobs"])
        cursor = page.get("next_cursor")
        if not cursor:
            return out


@dataclass
class Operator:
    process: Process
    webhook_port: int
    health_port: int
    metrics_port: int

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}"

    def log(self) -> str:
        return self.process.log()


OperatorFactory = Callable[..., Operator]


@pytest.fixture
def start_operator(
    control_plane: ControlPlane, namespace: str, queue_service_process: QueueServiceProcess, tmp_path: Path
) -> Iterator[OperatorFactory]:
    """Starts `portico operator` processes watching the test's namespace; all stopped at the end."""
    started: list[Operator] = []

    def start(
        *extra: str,
        kubeconfig: Path | None = None,
        namespaces: tuple[str, ...] | None = None,
        webhook_port: int | None = None,
        env: dict[str, str] | None = None,
        drop_env: tuple[str, ...] = (),
        user: int | None = None,
    ) -> Operator:
        op = Operator(
            Process(
                [], tmp_path / f"operator-{len(started)}.log", env=env or {}, drop_env=drop_env, user=user
            ),
            webhook_port=webhook_port or free_port(),
            health_port=free_port(),
            metrics_port=free_port(),
        )
        op.process.args = operator_command(
            kubeconfig=kubeconfig or control_plane.kubeconfig,
            queue_url=queue_service_process.url,
            namespaces=namespaces if namespaces is not None else (namespace,),
            webhook_port=op.webhook_port,
            health_port=op.health_port,
            metrics_port=op.metrics_port,
            extra=("--status-interval", "0.5", "--stop-timeout", "10", *extra),
        )
        op.process.start()
        started.append(op)
        wait_healthy(op)
        return op

    yield start
    for op in started:
        op.process.stop()


def wait_healthy(op: Operator, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not op.process.running:
            raise AssertionError(f"operator exited:\n{op.log()[-4000:]}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{op.health_port}/healthz", timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"operator not healthy in {timeout}s:\n{op.log()[-4000:]}")


def wait_for(
    predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.1, message: str = ""
) -> Any:
    """Poll until `predicate()` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}: last={last!r}")


def status_of(kubectl: Kubectl, name: str) -> dict[str, Any]:
    obj = kubectl.json("get", "jobtrigger", name)
    return dict(obj.get("status") or {})


@dataclass(frozen=True)
class MissedRuns:
    """What a `ScheduleMissed` Event of a catch-up says: runs scheduled from `first` to before `pending`
    were not all created; `fired` of them were (the most recent ones)."""

    first: datetime
    pending: datetime
    fired: int


_CATCH_UP = re.compile(
    r"run\(s\) scheduled from (?P<first>\S+) to before (?P<pending>\S+) were not created.*?"
    r"(?:fired (?P<fired>\d+) )?\(catchUp: "
)


def missed_runs(kubectl: Kubectl, name: str) -> list[MissedRuns]:
    """The catch-ups a schedule trigger reported, from the operator's own clock (not the test's)."""
    items = kubectl.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    out = []
    for event in items:
        m = _CATCH_UP.search(event["message"]) if event["reason"] == "ScheduleMissed" else None
        if m:
            first, pending = (
                datetime.fromisoformat(m[k].replace("Z", "+00:00")) for k in ("first", "pending")
            )
            out.append(MissedRuns(first, pending, int(m["fired"] or 0)))
    return sorted(out, key=lambda r: r.pending)


def post_json(url: str, body: dict[str, Any]) -> int:
    """POST a JSON body; the status code, or 0 when nothing answered."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def trigger_manifest(
    name: str, source: dict[str, Any], *, job: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "triggers.portico.dev/v1alpha1",
        "kind": "JobTrigger",
        "metadata": {"name": name},
        "spec": {"job": job or {"type": "e2e.job"}, **source, **spec},
    }

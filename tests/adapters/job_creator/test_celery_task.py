"""`CeleryJobCreator` against the real RabbitMQ and a real Redis, with a real Celery worker consuming:
each task runs once, under the task id derived from the idempotency key, with the payload as kwargs."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from portico.adapters.job_creator.celery_task import (
    CeleryJobCreator,
    CeleryTarget,
    CeleryTargetSpec,
    task_id,
)
from portico.domain.trigger import TriggerRef
from portico.ports.job_creator import JobCreationError
from portico.ports.job_target import TargetContext
from portico.ports.trigger_source import StaticSecrets

pytestmark = pytest.mark.services

WORKER_APP = """
import json, os
from celery import Celery

app = Celery("portico_test", broker=os.environ["BROKER_URL"])
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(name="reports.build", bind=True)
def build(self, **kwargs):
    with open(os.environ["RESULTS"], "a") as out:
        out.write(json.dumps({"id": self.request.id, "kwargs": kwargs, "task": self.name}) + "\\n")
"""


class Worker:
    """`celery worker` in a subprocess, consuming one queue; `runs()` reads what its task recorded."""

    def __init__(self, tmp_path: Path, broker_url: str, queue: str) -> None:
        (tmp_path / "portico_celery_app.py").write_text(WORKER_APP)
        self.results = tmp_path / f"runs-{queue}.jsonl"
        self.log = tmp_path / f"worker-{queue}.log"
        env = {**os.environ, "BROKER_URL": broker_url, "RESULTS": str(self.results)}
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "portico_celery_app", "worker", "-Q", queue,
                    "--pool=solo", "--without-heartbeat", "--without-mingle", "--without-gossip",
                    "--loglevel=INFO",
                ],
                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def runs(self) -> list[dict[str, Any]]:
        if not self.results.exists():
            return []
        return [json.loads(line) for line in self.results.read_text().splitlines() if line]

    def wait_runs(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.runs()) >= count:
                return self.runs()
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.1)
        raise AssertionError(f"{len(self.runs())} runs, expected {count}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(params=["rabbitmq", "redis"])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "rabbitmq":
        return str(request.getfixturevalue("rabbitmq").url)
    return str(request.getfixturevalue("redis").url())


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Any]:
    workers: list[Worker] = []

    def start(broker_url: str, queue: str) -> Worker:
        workers.append(Worker(tmp_path, broker_url, queue))
        return workers[-1]

    yield start
    for worker in workers:
        worker.stop()


async def test_each_job_runs_once_as_a_task_with_its_kwargs(broker_url: str, worker_factory: Any) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    first = CeleryJobCreator(broker_url, task_names={"report.build": "reports.build"}, queue=queue)
    restarted = CeleryJobCreator(broker_url, task_names={"report.build": "reports.build"}, queue=queue)
    try:
        job = await first.create_job(
            "report.build",
            {"day": "2026-11-28", "rows": [1, 2]},
            metadata={"a": "b"},
            idempotency_key="run-1",
        )
        again = await first.create_job(
            "report.build", {"day": "2026-11-28", "rows": [1, 2]}, idempotency_key="run-1"
        )
        other = await first.create_job("report.build", {"day": "2026-11-29"}, idempotency_key="run-2")
    finally:
        await first.close()
    assert job.id == task_id("run-1") == str(uuid.UUID(job.id)) and again.existing and again.id == job.id
    worker = worker_factory(broker_url, queue)
    runs = worker.wait_runs(2)
    assert sorted((r["id"], json.dumps(r["kwargs"], sort_keys=True)) for r in runs) == sorted(
        [
            (job.id, json.dumps({"day": "2026-11-28", "rows": [1, 2]}, sort_keys=True)),
            (other.id, json.dumps({"day": "2026-11-29"}, sort_keys=True)),
        ]
    )
    assert {r["task"] for r in runs} == {"reports.build"}
    try:
        replay = await restarted.create_job("report.build", {"day": "2026-11-28"}, idempotency_key="run-1")
    finally:
        await restarted.close()
    if broker_url.startswith("redis"):
        assert replay.existing, "on Redis the marker survives a restart: not published again"
        time.sleep(1.5)
        assert len(worker.runs()) == 2
    else:
        assert replay.id == job.id, "on RabbitMQ a restart republishes under the same task id"


async def test_an_unreachable_broker_is_a_retryable_failure_without_the_password() -> None:
    creator = CeleryJobCreator("amqp://user:s3cret-pw@127.0.0.1:1/", queue="q", deadline=3)
    try:
        with pytest.raises(JobCreationError) as caught:
            await creator.create_job("t", {}, idempotency_key="k")
    finally:
        await creator.close()
    assert caught.value.retryable
    assert "s3cret-pw" not in str(caught.value) and "amqp://127.0.0.1:1/" in str(caught.value)


def test_the_target_reads_the_broker_url_from_its_secret() -> None:
    spec = CeleryTargetSpec.model_validate({"brokerUrlSecretRef": {"name": "mq", "key": "url"}})
    context = TargetContext(
        ref=TriggerRef("t", "ns"),
        shared=None,
        secrets=StaticSecrets({("mq", "url"): "kafka://x"}),  # type: ignore[arg-type]
    )
    with pytest.raises(Exception, match="amqp"):
        CeleryTarget().build(spec, context)

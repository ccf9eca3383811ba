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
    assert replay.existing and replay.id == job.id, "a restart does not publish it again"
    time.sleep(1.5)
    assert len(worker.runs()) == 2


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


CRASHING_PUBLISHER = """
import asyncio, os, sys
from portico.adapters.job_creator.celery_task import CeleryJobCreator

async def main():
    creator = CeleryJobCreator(sys.argv[1], queue=sys.argv[2], scope="ns/schedule")
    job = await creator.create_job("reports.build", {"day": "2026-11-28"}, idempotency_key=sys.argv[3])
    print(job.id, job.existing, flush=True)
    os._exit(0)  # a crash: no close, nothing recorded anywhere but on the broker

asyncio.run(main())
"""


async def test_rabbitmq_a_task_published_before_a_crash_is_not_published_again(
    rabbitmq: Any, worker_factory: Any, tmp_path: Path
) -> None:
    """The crash window: the broker confirmed the task, the process died before the source recorded
    it; the restarted creator is asked for the same key and counts the existing task."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "crashing_publisher.py"
    script.write_text(CRASHING_PUBLISHER)
    crashed = subprocess.run(
        [sys.executable, str(script), rabbitmq.url, queue, "run-7"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode == 0, crashed.stderr
    assert crashed.stdout.split() == [task_id("run-7"), "False"]
    restarted = CeleryJobCreator(rabbitmq.url, queue=queue, scope="ns/schedule")
    try:
        replay = await restarted.create_job("reports.build", {"day": "2026-11-28"}, idempotency_key="run-7")
        later = await restarted.create_job("reports.build", {"day": "2026-11-29"}, idempotency_key="run-8")
    finally:
        await restarted.close()
    assert replay.existing and replay.id == task_id("run-7") and not later.existing
    worker = worker_factory(rabbitmq.url, queue)
    runs = worker.wait_runs(2)
    time.sleep(1.5)
    assert sorted(r["id"] for r in worker.runs()) == sorted([task_id("run-7"), task_id("run-8")])
    assert runs[0]["kwargs"] == {"day": "2026-11-28"}


async def test_rabbitmq_two_creators_publishing_the_same_ids_at_once_make_one_task_each(
    rabbitmq: Any, worker_factory: Any
) -> None:
    """Two replicas (a webhook served by both, a fail-over overlap) asked for the same keys at the same
    time: each task is published once, the other creator counts it as existing."""
    import asyncio

    queue = f"q-{uuid.uuid4().hex[:8]}"
    replicas = [CeleryJobCreator(rabbitmq.url, queue=queue, scope="ns/hook", threads=4) for _ in range(2)]
    keys = [f"delivery-{n}" for n in range(40)]
    try:
        results = await asyncio.gather(
            *(
                replica.create_job("reports.build", {"n": n}, idempotency_key=key)
                for n, key in enumerate(keys)
                for replica in replicas
            )
        )
    finally:
        for replica in replicas:
            await replica.close()
    by_key: dict[str, list[bool]] = {}
    for job in results:
        by_key.setdefault(job.idempotency_key or "", []).append(job.existing)
    assert all(sorted(flags) == [False, True] for flags in by_key.values()), by_key
    worker = worker_factory(rabbitmq.url, queue)
    worker.wait_runs(len(keys))
    time.sleep(1.5)
    assert sorted(r["id"] for r in worker.runs()) == sorted(task_id(key) for key in keys)


async def test_rabbitmq_a_creator_hands_its_claims_over_on_request(rabbitmq: Any) -> None:
    """A creator that holds every shard stops reading the ledger; another one asking for the shards gets
    them well within its deadline (shorter than the time a shard is kept unused), and what it
    published is known to the first one when it takes them back."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    first = CeleryJobCreator(rabbitmq.url, queue=queue, scope="ns/hook", threads=2)
    second = CeleryJobCreator(rabbitmq.url, queue=queue, scope="ns/hook", threads=2, deadline=3)
    keys = [f"k-{n}" for n in range(200)]  # every shard
    try:
        published = [await first.create_job("t", {}, idempotency_key=key) for key in keys]
        assert first._rabbitmq is not None
        for _ in range(100):
            if first._rabbitmq.ledger.stopped:
                break
            time.sleep(0.05)
        assert first._rabbitmq.ledger.stopped, "holding every shard, the reader stops"
        again = [await second.create_job("t", {}, idempotency_key=key) for key in keys]
        new = [await second.create_job("t", {}, idempotency_key=f"new-{key}") for key in keys]
        back = [await first.create_job("t", {}, idempotency_key=f"new-{key}") for key in keys]
    finally:
        await first.close()
        await second.close()
    assert not any(job.existing for job in published) and all(job.existing for job in again)
    assert not any(job.existing for job in new) and all(job.existing for job in back)


async def test_rabbitmq_three_replicas_and_a_restart_publish_each_id_once(rabbitmq: Any) -> None:
    """Three creators asked for the same 300 keys in random order, then again after one restarted:
    300 tasks in the queue."""
    import asyncio
    import random

    import aio_pika

    queue = f"q-{uuid.uuid4().hex[:8]}"
    keys = [f"d-{n}" for n in range(300)]
    replicas = [CeleryJobCreator(rabbitmq.url, queue=queue, scope="ns/x", threads=t) for t in (2, 4, 8)]
    try:
        calls = [(replica, key) for key in keys for replica in replicas]
        random.shuffle(calls)
        first = await asyncio.gather(*(r.create_job("t", {}, idempotency_key=k) for r, k in calls))
        await replicas[0].close()
        replicas[0] = CeleryJobCreator(rabbitmq.url, queue=queue, scope="ns/x")
        second = await asyncio.gather(
            *(r.create_job("t", {}, idempotency_key=k) for r in replicas for k in keys)
        )
    finally:
        for replica in replicas:
            await replica.close()
    assert sum(not job.existing for job in first) == 300 and all(job.existing for job in second)
    connection = await aio_pika.connect(rabbitmq.url)
    try:
        declared = await (await connection.channel()).declare_queue(queue, passive=True)
    finally:
        await connection.close()
    assert declared.declaration_result.message_count == 300


async def test_rabbitmq_the_ledger_survives_a_broker_restart(rabbitmq: Any) -> None:
    """The ledger is a durable stream: a creator started after the broker restarted still finds what
    was published before, and the creator that lived through the restart goes on."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    before = CeleryJobCreator(rabbitmq.url, queue=queue, scope="ns/restart", deadline=20)
    try:
        first = await before.create_job("t", {}, idempotency_key="before")
        rabbitmq.restart()
        during = await _eventually_created(before, "during")
    finally:
        await before.close()
    after = CeleryJobCreator(rabbitmq.url, queue=queue, scope="ns/restart")
    try:
        replays = [await after.create_job("t", {}, idempotency_key=key) for key in ("before", "during")]
    finally:
        await after.close()
    assert not first.existing and not during.existing and all(job.existing for job in replays)


async def _eventually_created(creator: CeleryJobCreator, key: str) -> Any:
    import asyncio

    for _ in range(60):
        try:
            return await creator.create_job("t", {}, idempotency_key=key)
        except JobCreationError as exc:
            assert exc.retryable
            await asyncio.sleep(0.5)
    raise AssertionError("never accepted after the restart")


async def test_rabbitmq_other_scopes_do_not_hide_a_task(rabbitmq: Any) -> None:
    """Two triggers whose keys happen to be equal (the same webhook delivery id) each send their task."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    one = CeleryJobCreator(rabbitmq.url, queue=queue, scope="ns/one")
    two = CeleryJobCreator(rabbitmq.url, queue=queue, scope="ns/two")
    try:
        first = await one.create_job("t", {}, idempotency_key="same-delivery")
        second = await two.create_job("t", {}, idempotency_key="same-delivery")
    finally:
        await one.close()
        await two.close()
    assert not first.existing and not second.existing


async def test_rabbitmq_a_creator_whose_connections_dropped_reads_what_it_missed(rabbitmq: Any) -> None:
    """A creator holding every shard (reader stopped) loses its publishing connections: its claims are
    gone, another creator publishes in every shard; asked for those keys, the first one knows them."""
    import socket

    queue = f"q-{uuid.uuid4().hex[:8]}"
    first = CeleryJobCreator(rabbitmq.url, queue=queue, scope="ns/drop", threads=2)
    second = CeleryJobCreator(rabbitmq.url, queue=queue, scope="ns/drop", threads=2, deadline=5)
    keys = [f"k-{n}" for n in range(200)]
    try:
        for key in keys:
            await first.create_job("t", {}, idempotency_key=key)
        assert first._rabbitmq is not None
        for _ in range(100):
            if first._rabbitmq.ledger.stopped:
                break
            time.sleep(0.05)
        assert first._rabbitmq.ledger.stopped
        for lane in first._rabbitmq._lanes:
            lane.connection.connection.sock.shutdown(socket.SHUT_RDWR)
        new = [await second.create_job("t", {}, idempotency_key=f"new-{key}") for key in keys]
        back = [await _eventually_created(first, f"new-{key}") for key in keys]
    finally:
        await first.close()
        await second.close()
    assert not any(job.existing for job in new) and all(job.existing for job in back)

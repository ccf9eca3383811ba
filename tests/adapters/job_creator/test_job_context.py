"""Every job creator honours the job context: a trigger calls `create_job` with the seed's four
arguments inside `job_context(...)`, and the idempotency key and metadata still reach the real system
(queue service, CloudEvents sink, kube-apiserver, RabbitMQ, Redis), deduplicating exactly as an explicit
key does."""

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import aio_pika
import pytest
from aiohttp import web
from kubernetes_asyncio import client

from portico.adapters.job_creator.celery_task import CeleryJobCreator, task_id
from portico.adapters.job_creator.cloud_events import CloudEventsJobCreator
from portico.adapters.job_creator.http import HttpJobCreator, header_safe_idempotency_key
from portico.adapters.job_creator.kubernetes_job import (
    KEY_ANNOTATION,
    KubernetesJobCreator,
    KubernetesJobTargetSpec,
)
from portico.adapters.job_queue.http import HttpJobQueue
from portico.domain.trigger import TriggerRef
from portico.kits.job.job_service import JobService
from portico.ports.job_creator import Job, JobCreator, job_context
from tests.conftest import RunningQueueService

KEY = "schedule/uid-1/2026-11-28T09:00:00Z"
METADATA = {"trigger.name": "nightly", "trigger.source": "schedule"}


async def create_twice(creator: JobCreator) -> tuple[Job, Job]:
    """The seed's four-argument call inside the context, then the same job with the key passed
    explicitly (a direct library caller): the second is the first one again."""
    with job_context(idempotency_key=KEY, metadata=METADATA):
        first = await creator.create_job(job_type="t", payload={"n": 1}, queue_name="q", priority=3)
    again = await creator.create_job("t", {"n": 1}, queue_name="q", priority=3, idempotency_key=KEY)
    assert again.existing and not first.existing and again.id == first.id
    assert (first.idempotency_key, first.metadata) == (KEY, METADATA)
    return first, again


async def test_the_queue_service_stores_the_context_key_and_metadata(
    queue_service: RunningQueueService,
) -> None:
    async with HttpJobCreator(queue_service.url) as creator:
        await create_twice(creator)
    [stored] = await queue_service.list_jobs()
    assert (stored.idempotency_key, stored.metadata, stored.priority) == (KEY, METADATA, 3)


async def test_the_job_service_passes_the_context_to_its_queue(queue_service: RunningQueueService) -> None:
    async with HttpJobQueue(queue_service.url) as queue:
        await create_twice(JobService(job_queue=queue))
    [stored] = await queue_service.list_jobs()
    assert (stored.idempotency_key, stored.metadata) == (KEY, METADATA)


@pytest.fixture
async def sink() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A CloudEvents sink on 127.0.0.1 that accepts every event and keeps its headers."""
    received: list[dict[str, str]] = []

    async def accept(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/", received
    finally:
        await runner.cleanup()


async def test_a_cloud_event_carries_the_context_key_as_its_id(
    sink: tuple[str, list[dict[str, str]]],
) -> None:
    url, received = sink
    async with CloudEventsJobCreator(url, source="/test") as creator:
        first, _ = await create_twice(creator)
    [headers] = received
    assert headers["ce-id"] == header_safe_idempotency_key(KEY) == first.id
    assert json.loads(unquote(headers["ce-jobmetadata"])) == METADATA


@pytest.mark.services
async def test_a_kubernetes_job_is_named_and_annotated_from_the_context_key(
    kube_api: Any, namespace: str
) -> None:
    template = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    spec = KubernetesJobTargetSpec.model_validate({"jobTemplate": template})
    creator = KubernetesJobCreator(kube_api, spec, trigger=TriggerRef("nightly", namespace, "uid-1"))
    first, _ = await create_twice(creator)
    [stored] = (await client.BatchV1Api(kube_api).list_namespaced_job(namespace)).items
    assert stored.metadata.name == first.id
    assert stored.metadata.annotations[KEY_ANNOTATION] == KEY
    env = {e.name: e.value for e in stored.spec.template.spec.containers[0].env}
    assert (env["PORTICO_IDEMPOTENCY_KEY"], json.loads(env["PORTICO_JOB_METADATA"])) == (KEY, METADATA)


@pytest.mark.services
@pytest.mark.parametrize("broker", ["rabbitmq", "redis"])
async def test_a_celery_task_id_comes_from_the_context_key(
    broker: str, request: pytest.FixtureRequest
) -> None:
    queue = f"ctx-{uuid.uuid4().hex[:8]}"
    server = request.getfixturevalue(broker)
    url = str(server.url if broker == "rabbitmq" else server.url())
    creator = CeleryJobCreator(url, queue=queue)
    try:
        first, _ = await create_twice(creator)
    finally:
        await creator.close()
    assert first.id == task_id(KEY)
    [headers] = await published_headers(broker, url, queue)
    assert (headers["id"], headers["portico_metadata"]) == (task_id(KEY), METADATA)


async def published_headers(broker: str, url: str, queue: str) -> list[dict[str, Any]]:
    """The headers of every task message waiting in `queue` on the broker (consumed)."""
    if broker == "redis":
        import redis as redis_client

        with redis_client.Redis.from_url(url) as redis:
            raw = redis.lrange(queue, 0, -1)
            redis.delete(queue)
        return [json.loads(message)["headers"] for message in raw]  # type: ignore[union-attr]
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.get_queue(queue, ensure=True)
        headers: list[dict[str, Any]] = []
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            headers.append(dict(message.headers))
        await declared.delete()
    return headers

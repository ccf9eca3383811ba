"""The source's guarantees hold whatever the target: a RabbitMQ message is acked only once the target
accepted its job (requeued while it cannot), and a redelivered message (same message id) makes no
second event, Job or task. Real RabbitMQ, real sink, real kube-apiserver, real Redis."""

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aiohttp import web
from cloudevents.core.bindings.http import HTTPMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from kubernetes_asyncio import client

from portico.adapters.job_creator.celery_task import CeleryJobCreator
from portico.adapters.job_creator.cloud_events import CloudEventsJobCreator
from portico.adapters.job_creator.kubernetes_job import KubernetesJobCreator, KubernetesJobTargetSpec
from portico.domain.trigger import JobTemplate, TriggerRef
from portico.ports.job_creator import Job, JobCreator
from portico.sources.amqp.trigger import AmqpSpec, RabbitMQTrigger
from portico.testing.services import RabbitMQServer
from tests.sources.conftest import eventually

TEMPLATE = JobTemplate(type="event.handle", queue="events")

pytestmark = pytest.mark.services


@contextlib.asynccontextmanager
async def amqp_into(
    creator: JobCreator, rabbitmq: RabbitMQServer, queue: str | None = None
) -> AsyncIterator[tuple[RabbitMQTrigger, Any]]:
    queue = queue or f"events-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(rabbitmq.url)
    channel = await connection.channel()
    await channel.declare_queue(queue, durable=True)
    spec = AmqpSpec.model_validate(
        {
            "urlSecretRef": {"name": "mq", "key": "url"},
            "queue": queue,
            "reconnectIntervalSeconds": 0.2,
            "requeueDelaySeconds": 0.2,
        }
    )
    trigger = RabbitMQTrigger(job_creator=creator, config=spec, url=rabbitmq.url, template=TEMPLATE)
    await trigger.start()

    async def publish(n: int, message_id: str) -> None:
        message = aio_pika.Message(json.dumps({"n": n}).encode(), message_id=message_id)
        await channel.default_exchange.publish(message, routing_key=queue)

    async def depth() -> int:
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)

    publish.depth = depth  # type: ignore[attr-defined]
    try:
        yield trigger, publish
    finally:
        await trigger.stop()
        await channel.queue_delete(queue)
        await connection.close()


async def test_cloud_events_acked_only_once_the_sink_accepted(rabbitmq: RabbitMQServer) -> None:
    accepted: list[str] = []
    state = {"status": 503}

    async def sink(request: web.Request) -> web.Response:
        event = from_binary(HTTPMessage(dict(request.headers), await request.read()), JSONFormat())
        if state["status"] < 300:
            accepted.append(event.get_id())
        return web.Response(status=state["status"])

    app = web.Application()
    app.router.add_post("/", sink)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    creator = CloudEventsJobCreator(url, source="/test", deadline=0.3, backoff_max=0.05)
    try:
        async with amqp_into(creator, rabbitmq) as (trigger, publish):
            for n in range(3):
                await publish(n, f"m-{n}")
            await eventually(lambda: trigger.get_health().source_status["messagesRequeued"] >= 3)
            assert accepted == [] and trigger.get_health().jobs_created_count == 0
            state["status"] = 202
            await eventually(lambda: trigger.get_health().jobs_created_count == 3, timeout=30)
            await publish(0, "m-0")  # a redelivery of an accepted message
            await eventually(_drained(publish), timeout=10)
    finally:
        await creator.close()
        await runner.cleanup()
    assert len(accepted) == 3 and len(set(accepted)) == 3, accepted


def _drained(publish: Any) -> Any:
    async def check() -> bool:
        return await publish.depth() == 0

    return check


async def test_kubernetes_jobs_one_per_message_id_through_redelivery(
    rabbitmq: RabbitMQServer, kube_api: Any, namespace: str
) -> None:
    template = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    spec = KubernetesJobTargetSpec.model_validate({"jobTemplate": template})
    creator = KubernetesJobCreator(kube_api, spec, trigger=TriggerRef("events", namespace, "uid-1"))
    async with amqp_into(creator, rabbitmq) as (trigger, publish):
        for n in range(3):
            await publish(n, f"m-{n}")
        for n in range(3):
            await publish(n, f"m-{n}")
        await eventually(_drained(publish), timeout=30)
        await eventually(lambda: trigger.get_health().jobs_created_count == 3)
    listed = await client.BatchV1Api(kube_api).list_namespaced_job(namespace)
    assert len(listed.items) == 3


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
async def test_celery_one_task_per_message_id_through_redelivery_and_a_restart(
    broker: str, rabbitmq: RabbitMQServer, request: pytest.FixtureRequest
) -> None:
    """Each message id is sent twice to one creator, then once more to a new creator (as after an
    operator restart): three tasks in the Celery queue."""
    queue = f"celery-{uuid.uuid4().hex[:8]}"
    source = f"events-{uuid.uuid4().hex[:8]}"
    url = rabbitmq.url if broker == "rabbitmq" else request.getfixturevalue("redis").url()
    accepted: list[Job] = []
    for attempt in range(2):
        creator = CeleryJobCreator(url, queue=queue, scope="ns/events")

        async def counted(*args: Any, _create: Any = creator.create_job, **kwargs: Any) -> Job:
            accepted.append(await _create(*args, **kwargs))
            return accepted[-1]

        creator.create_job = counted  # type: ignore[method-assign]
        try:
            async with amqp_into(creator, rabbitmq, source) as (trigger, publish):
                for _ in range(2 - attempt):
                    for n in range(3):
                        await publish(n, f"m-{n}")
                expected = 6 if attempt == 0 else 9
                await eventually(lambda: len(accepted) == expected, timeout=30)  # noqa: B023
                assert trigger.get_health().jobs_created_count == (3 if attempt == 0 else 0)
        finally:
            await creator.close()
    assert [job.existing for job in accepted[6:]] == [True] * 3
    assert await _celery_queue_depth(broker, url, queue) == 3


async def _celery_queue_depth(broker: str, url: str, queue: str) -> int:
    if broker == "redis":
        import redis as redis_client

        return int(redis_client.Redis.from_url(url).llen(queue))
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()

"""The seed's "Message Queue Trigger for Event-Driven Processing" example against a real RabbitMQ: its
usage with the library's `RabbitMQTrigger` (imports adapted, `amqp://localhost` the test broker), and its
own custom trigger class, as written, on the `JobTrigger` port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aio_pika
import pytest
import structlog

from portico.adapters.job_queue.memory import InMemoryJobQueue
from portico.kits.job.job_service import JobService
from portico.ports.job_creator import JobCreator
from portico.ports.job_trigger import JobTrigger
from portico.sources.amqp import RabbitMQTrigger
from portico.testing.services import RabbitMQServer
from tests.sources.amqp.conftest import queue_depth_is
from tests.sources.conftest import eventually

pytestmark = pytest.mark.services

logger = structlog.get_logger()

EVENTS = [
    {"event_type": "user.created", "payload": {"user_id": 7}, "queue": "emails", "priority": 5},
    {"event_type": "order.placed", "payload": {"order_id": 12}},
    {"event_type": "newsletter.opened", "payload": {"user_id": 7}},
    {"event_type": "payment.received", "payload": {"invoice": "F-1"}, "queue": "billing"},
]


@pytest.fixture
async def job_events(rabbitmq: RabbitMQServer) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A channel to publish on; the seed's `job_events` queue is removed afterwards."""
    connection = await aio_pika.connect_robust(rabbitmq.url)
    channel = await connection.channel()
    yield channel
    await channel.queue_delete("job_events")
    await connection.close()


async def publish_events(channel: aio_pika.abc.AbstractChannel) -> None:
    for event in EVENTS:
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps(event).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key="job_events",
        )


def created(job_queue: InMemoryJobQueue) -> list[tuple[str, str, int, dict[str, object]]]:
    return sorted(
        (job.job_type, job.queue_name, job.priority, job.payload) for job in job_queue.jobs.values()
    )


EXPECTED = [
    ("email.welcome", "emails", 5, {"user_id": 7}),
    ("invoice.send", "billing", 0, {"invoice": "F-1"}),
    ("order.process", "default", 0, {"order_id": 12}),
]


async def test_message_queue_trigger_usage(
    rabbitmq: RabbitMQServer, job_events: aio_pika.abc.AbstractChannel
) -> None:
    job_queue = InMemoryJobQueue()
    job_service = JobService(job_queue=job_queue)

    # Usage
    mq_trigger = RabbitMQTrigger(
        job_creator=job_service,
        rabbitmq_url=rabbitmq.url,
        queue_name="job_events",
        job_type_mapping={
            "user.created": "email.welcome",
            "order.placed": "order.process",
            "payment.received": "invoice.send",
        },
    )

    await mq_trigger.start()

    # Jobs will be created from RabbitMQ messages
    try:
        await publish_events(job_events)
        await eventually(lambda: len(job_queue.jobs) == 3)
        await eventually(lambda: queue_depth_is(job_events, "job_events", 0))
        await asyncio.sleep(0.2)
    finally:
        await mq_trigger.stop()
    assert created(job_queue) == EXPECTED, "the unmapped newsletter.opened is acknowledged without a job"
    assert mq_trigger.messages_ignored == 1
    assert mq_trigger.get_health().errors_count == 0


class SeedRabbitMQTrigger(JobTrigger):
    """Trigger that creates jobs from RabbitMQ messages."""

    def __init__(
        self, job_creator: JobCreator, rabbitmq_url: str, queue_name: str, job_type_mapping: dict[str, str]
    ):
        self.job_creator = job_creator
        self.rabbitmq_url = rabbitmq_url
        self.queue_name = queue_name
        self.job_type_mapping = job_type_mapping
        self._connection = None
        self._channel = None
        self._running = False

    async def start(self) -> None:
        """Start consuming messages from RabbitMQ."""
        if self._running:
            return

        self._running = True

        # Connect to RabbitMQ
        self._connection = await aio_pika.connect_robust(self.rabbitmq_url)
        self._channel = await self._connection.channel()

        # Declare queue
        queue = await self._channel.declare_queue(self.queue_name, durable=True)

        # Start consuming
        await queue.consume(self._on_message)

    async def stop(self) -> None:
        """Stop consuming messages."""
        if not self._running:
            return

        self._running = False

        if self._connection:
            await self._connection.close()

    @property
    def is_running(self) -> bool:
        return self._running

    async def _on_message(self, message):
        """Handle incoming message by creating job."""
        async with message.process():
            try:
                # Parse message
                data = json.loads(message.body.decode())

                # Map event type to job type
                event_type = data.get("event_type")
                job_type = self.job_type_mapping.get(event_type)

                if job_type:
                    # Create job from message
                    await self.job_creator.create_job(
                        job_type=job_type,
                        payload=data.get("payload", {}),
                        queue_name=data.get("queue", "default"),
                        priority=data.get("priority", 0),
                    )

            except Exception as e:
                logger.error("error_processing_message", error=str(e))


async def test_the_seeds_own_trigger_class_runs_on_the_port(
    rabbitmq: RabbitMQServer, job_events: aio_pika.abc.AbstractChannel
) -> None:
    """The same messages through the seed's class: the library's trigger does what it does."""
    job_queue = InMemoryJobQueue()
    job_service = JobService(job_queue=job_queue)
    mq_trigger = SeedRabbitMQTrigger(
        job_creator=job_service,
        rabbitmq_url=rabbitmq.url,
        queue_name="job_events",
        job_type_mapping={
            "user.created": "email.welcome",
            "order.placed": "order.process",
            "payment.received": "invoice.send",
        },
    )
    await mq_trigger.start()
    try:
        assert mq_trigger.is_running and mq_trigger.get_health().is_running
        await publish_events(job_events)
        await eventually(lambda: len(job_queue.jobs) == 3)
        await eventually(lambda: queue_depth_is(job_events, "job_events", 0))
    finally:
        await mq_trigger.stop()
    assert created(job_queue) == EXPECTED

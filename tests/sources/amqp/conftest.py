"""Shared parts of the RabbitMQ source's tests: a publishing channel on the session broker, a fresh
queue per test, and helpers to publish and to read a queue's depth."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from portico.domain.trigger import JobTemplate, SecretRef
from portico.sources.amqp import AmqpSpec
from portico.testing.services import RabbitMQServer

URL_REF = SecretRef(name="mq", key="url")
TEMPLATE = JobTemplate(type="event.handle", queue="events", payload={"origin": "amqp"})


def spec(queue: str, **fields: Any) -> AmqpSpec:
    return AmqpSpec.model_validate(
        {"urlSecretRef": URL_REF.to_resource(), "queue": queue, "reconnectIntervalSeconds": 0.2, **fields}
    )


@pytest.fixture
async def channel(rabbitmq: RabbitMQServer) -> AsyncIterator[AbstractChannel]:
    """A publishing channel with publisher confirms (a robust connection: tests restart the broker)."""
    connection: AbstractRobustConnection = await aio_pika.connect_robust(rabbitmq.url, reconnect_interval=0.2)
    channel = await connection.channel()
    yield channel
    await connection.close()


@pytest.fixture
async def queue_name(channel: AbstractChannel) -> AsyncIterator[str]:
    name = f"events-{uuid.uuid4().hex[:8]}"
    await channel.declare_queue(name, durable=True)
    yield name
    await channel.queue_delete(name)


async def publish(
    channel: AbstractChannel, queue: str, body: Any, *, raw: bytes | None = None, **properties: Any
) -> None:
    payload = raw if raw is not None else json.dumps(body).encode()
    message = aio_pika.Message(payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties)
    await channel.default_exchange.publish(message, routing_key=queue)


async def queue_depth(channel: AbstractChannel, queue: str) -> int:
    """Ready messages, from a fresh passive declare (a robust channel answers a repeated passive declare
    from its cache)."""
    underlay = await channel.get_underlay_channel()
    declared = await underlay.queue_declare(queue, passive=True)
    count = declared.message_count
    assert count is not None
    return count


async def queue_depth_is(channel: AbstractChannel, queue: str, expected: int) -> bool:
    return await queue_depth(channel, queue) == expected

"""The RabbitMQ source as the operator builds it: `spec.amqp`, the URL from a Secret, into the real queue
service."""

from __future__ import annotations

from typing import Any

import pytest
from aio_pika.abc import AbstractChannel

from portico.adapters.job_creator.http import HttpJobCreator
from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import TriggerRef
from portico.ports.job_trigger import TriggerStartError
from portico.ports.trigger_source import StaticSecrets, TriggerContext
from portico.sources.amqp import AmqpSource, AmqpSpec
from portico.testing.services import RabbitMQServer
from tests.sources.amqp.conftest import TEMPLATE, publish, queue_depth_is, spec
from tests.sources.conftest import RecordingEvents, eventually

pytestmark = pytest.mark.services


async def test_messages_become_jobs_in_the_queue_service(
    rabbitmq: RabbitMQServer, channel: AbstractChannel, queue_name: str, queue_service: Any
) -> None:
    config = spec(
        queue_name,
        eventTypeField="meta.event",
        jobTypeMapping={"order.placed": "order.process", "user.created": "user.welcome"},
    )
    events = RecordingEvents()
    async with HttpJobCreator(queue_service.url) as creator:
        context = TriggerContext(
            ref=TriggerRef(name="orders", namespace="shop", uid="uid-2"),
            template=TEMPLATE,
            job_creator=creator,
            events=events,
            secrets=StaticSecrets({("mq", "url"): rabbitmq.url}),
        )
        trigger = AmqpSource().build(config, context)
        await trigger.start()
        await trigger.start()  # idempotent
        assert trigger.is_running
        try:
            await publish(
                channel, queue_name, {"meta": {"event": "order.placed"}, "order": 1}, message_id="m-1"
            )
            await publish(channel, queue_name, {"order": 2}, message_id="m-2", type="user.created")
            await publish(channel, queue_name, {"meta": {"event": "other"}}, message_id="m-3")
            await publish(channel, queue_name, [1, 2, 3])
            await eventually(lambda: trigger.get_health().jobs_created_count == 4)
            await eventually(lambda: queue_depth_is(channel, queue_name, 0))
        finally:
            await trigger.stop()
        assert not trigger.is_running
    jobs = {job.idempotency_key: job for job in await queue_service.list_jobs()}
    assert len(jobs) == 4
    first = jobs["amqp/uid-2/m-1"]
    assert first.job_type == "order.process" and first.queue_name == "events"
    assert first.payload == {"origin": "amqp", "meta": {"event": "order.placed"}, "order": 1}
    assert first.metadata["amqp.event_type"] == "order.placed"
    assert first.metadata["amqp.message_id"] == "m-1"
    assert first.metadata["amqp.routing_key"] == queue_name
    assert first.metadata["trigger.source"] == "amqp"
    assert jobs["amqp/uid-2/m-2"].job_type == "user.welcome", "the AMQP type property is the fallback"
    assert jobs["amqp/uid-2/m-3"].job_type == "event.handle", "unmapped types use the template"
    assert {"origin": "amqp", "body": [1, 2, 3]} in [job.payload for job in jobs.values()]
    health = trigger.get_health()
    assert health.source_status == {
        "amqpQueue": queue_name,
        "connected": False,
        "messagesRejected": 0,
        "messagesRequeued": 0,
    }
    assert health.errors_count == 0


def test_a_manifest_without_url_secret_fails_clearly() -> None:
    context = TriggerContext(
        ref=TriggerRef(name="t"),
        template=TEMPLATE,
        job_creator=InMemoryJobCreator(),
        events=RecordingEvents(),
    )
    with pytest.raises(TriggerStartError, match="urlSecretRef is required") as info:
        AmqpSource().build(AmqpSpec(queue="q"), context)
    assert not info.value.retryable
    assert AmqpSource().secret_refs(AmqpSpec(queue="q")) == ()

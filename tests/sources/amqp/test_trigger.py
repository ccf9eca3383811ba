"""The RabbitMQ trigger against a real broker and the real queue service: messages become jobs exactly once
through broker restarts and queue-service outages, and poison messages are dead-lettered, not looped."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from pydantic import ValidationError

from portico.adapters.job_creator.http import HttpJobCreator
from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import JobTemplate, SecretRef, TriggerRef
from portico.ports.job_trigger import TriggerStartError
from portico.ports.trigger_source import StaticSecrets, TriggerContext
from portico.sources.amqp.trigger import AmqpSource, AmqpSpec, RabbitMQTrigger, lookup
from portico.testing.services import RabbitMQServer
from tests.sources.conftest import CountingJobCreator, RecordingEvents, RestartableQueueService, eventually

pytestmark = pytest.mark.services

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


# --- the spec and pure parts ---------------------------------------------------------------------------


def test_spec_defaults_and_rules() -> None:
    assert spec("q").to_resource() == {
        "urlSecretRef": {"name": "mq", "key": "url"},
        "queue": "q",
        "declareQueue": False,
        "bindings": [],
        "prefetch": 32,
        "jobTypeMapping": {},
        "unmappedPolicy": "UseTemplate",
        "requeueDelaySeconds": 1.0,
        "reconnectIntervalSeconds": 0.2,
    }
    with pytest.raises(ValidationError, match="deadLetterExchange needs declareQueue"):
        spec("q", deadLetterExchange="dlx")
    with pytest.raises(ValidationError, match="Reject needs a jobTypeMapping"):
        spec("q", unmappedPolicy="Reject")
    with pytest.raises(ValidationError, match="eventTypeField"):
        spec("q", eventTypeField="a..b")
    with pytest.raises(ValidationError, match="non-empty job type"):
        spec("q", jobTypeMapping={"a": " "})
    with pytest.raises(ValidationError, match="prefetch"):
        spec("q", prefetch=0)


def test_lookup_follows_dotted_paths() -> None:
    assert lookup({"meta": {"event": "x"}}, "meta.event") == "x"
    assert lookup({"meta": "flat"}, "meta.event") is None
    assert lookup([1], "a") is None


def test_url_must_be_amqp_and_is_never_echoed() -> None:
    with pytest.raises(TriggerStartError) as info:
        RabbitMQTrigger(job_creator=InMemoryJobCreator(), config=spec("q"), url="http://u:hunter2@h/")
    assert info.value.reason == "InvalidURL" and not info.value.retryable
    assert "hunter2" not in str(info.value)


# --- end to end ----------------------------------------------------------------------------------------


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


async def queue_depth_is(channel: AbstractChannel, queue: str, expected: int) -> bool:
    return await queue_depth(channel, queue) == expected


async def test_poison_messages_are_dead_lettered_once(
    rabbitmq: RabbitMQServer, channel: AbstractChannel, queue_service_factory: Any
) -> None:
    """Not JSON, unmapped in Reject mode, outside the input policy (nested 5000 deep, 1e400), and a job
    the queue service refuses for good: each lands in the
    dead-letter queue exactly once, and good messages around them still become jobs."""
    suffix = uuid.uuid4().hex[:8]
    dlx = await channel.declare_exchange(f"dlx-{suffix}", aio_pika.ExchangeType.FANOUT)
    dead = await channel.declare_queue(f"dead-{suffix}", durable=True)
    await dead.bind(dlx)
    queue = f"strict-{suffix}"
    qs = await queue_service_factory(max_body_bytes=2000)
    events = RecordingEvents()
    config = spec(
        queue,
        declareQueue=True,
        deadLetterExchange=dlx.name,
        eventTypeField="type",
        jobTypeMapping={"ok": "ok.job"},
        unmappedPolicy="Reject",
    )
    async with HttpJobCreator(qs.url) as creator:
        trigger = RabbitMQTrigger(
            job_creator=creator, config=config, url=rabbitmq.url, template=TEMPLATE, events=events
        )
        await trigger.start()
        try:
            await publish(channel, queue, None, raw=b"\x00not json", message_id="p-1")
            await publish(channel, queue, {"type": "unknown"}, message_id="p-2")
            await publish(channel, queue, {"type": "ok", "blob": "x" * 5000}, message_id="p-3")
            deep = b'{"type": "ok", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
            await publish(channel, queue, None, raw=deep, message_id="p-4")
            await publish(channel, queue, None, raw=b'{"type": "ok", "x": 1e400}', message_id="p-5")
            await publish(channel, queue, {"type": "ok", "n": 1}, message_id="g-1")
            await eventually(lambda: queue_depth_is(channel, dead.name, 5))
            await eventually(lambda: trigger.get_health().jobs_created_count == 1)
            await asyncio.sleep(0.5)
            assert await queue_depth(channel, dead.name) == 5, "rejected once, not redelivered"
        finally:
            await trigger.stop()
    dead_ids = []
    for _ in range(5):
        message = await dead.get(timeout=5)
        assert message is not None
        dead_ids.append(message.message_id)
        assert message.headers["x-death"][0]["count"] == 1  # type: ignore[index]
        await message.ack()
    assert sorted(dead_ids) == ["p-1", "p-2", "p-3", "p-4", "p-5"]
    health = trigger.get_health()
    assert health.source_status["messagesRejected"] == 5
    assert health.errors_count == 5
    assert [e[1] for e in events.events if e[0] == "Warning"] == ["MessageRejected"], "one event per burst"
    assert [job.metadata["amqp.message_id"] for job in await qs.list_jobs()] == ["g-1"]
    await channel.queue_delete(dead.name)
    await channel.queue_delete(queue)
    await channel.exchange_delete(dlx.name)


async def test_broker_restart_mid_stream_loses_no_message(
    rabbitmq_running: RabbitMQServer, queue_service: Any
) -> None:
    rabbitmq = rabbitmq_running
    queue = f"restart-{uuid.uuid4().hex[:8]}"
    total = 400
    connection = await aio_pika.connect_robust(rabbitmq.url, reconnect_interval=0.2)
    channel = await connection.channel()
    await channel.declare_queue(queue, durable=True)
    for i in range(total // 2):
        await publish(channel, queue, {"n": i}, message_id=f"r-{i}")
    events = RecordingEvents()
    async with HttpJobCreator(queue_service.url) as http:
        creator = CountingJobCreator(http, delay=0.01)
        trigger = RabbitMQTrigger(
            job_creator=creator,
            config=spec(queue, prefetch=10),
            url=rabbitmq.url,
            template=TEMPLATE,
            events=events,
        )
        await trigger.start()
        try:
            await eventually(lambda: len(creator.calls) >= 20)
            await asyncio.to_thread(rabbitmq.restart)
            await eventually(lambda: trigger.is_running, timeout=30)
            await connection.close()
            connection = await aio_pika.connect_robust(rabbitmq.url, reconnect_interval=0.2)
            channel = await connection.channel()
            for i in range(total // 2, total):
                await publish(channel, queue, {"n": i}, message_id=f"r-{i}")
            await eventually(lambda: len(creator.calls) == total, timeout=60)
            await eventually(lambda: queue_depth_is(channel, queue, 0), timeout=30)
        finally:
            await trigger.stop()
    jobs = await queue_service.list_jobs()
    assert sorted(int(job.payload["n"]) for job in jobs) == list(range(total)), "none lost, none duplicated"
    health = trigger.get_health()
    assert health.errors_count >= 1 and "lost" in (health.last_error or "")
    assert rabbitmq.password not in (health.last_error or "")
    assert any(reason == "Reconnected" for _, reason, _ in events.events)
    await channel.queue_delete(queue)
    await connection.close()


async def test_queue_service_down_requeues_with_backoff_and_loses_nothing(
    rabbitmq: RabbitMQServer,
    channel: AbstractChannel,
    queue_name: str,
    restartable_queue_service: RestartableQueueService,
) -> None:
    qs = restartable_queue_service
    total = 60
    async with HttpJobCreator(qs.url, deadline=0.2, backoff_max=0.05) as http:
        # the first 10 jobs go through; the rest wait until the queue service is down
        creator = CountingJobCreator(http, delay=0.005, hold_after=10)
        trigger = RabbitMQTrigger(
            job_creator=creator,
            config=spec(queue_name, prefetch=5, requeueDelaySeconds=0.2),
            url=rabbitmq.url,
            template=TEMPLATE,
        )
        await trigger.start()
        try:
            for i in range(total):
                await publish(channel, queue_name, {"n": i}, message_id=f"q-{i}")
            await eventually(lambda: trigger.get_health().jobs_created_count >= 10)
            await qs.stop()
            calls_before = sum(creator.calls.values())
            creator.release()
            await eventually(lambda: trigger.get_health().source_status["messagesRequeued"] >= 10)
            await asyncio.sleep(1.5)
            attempts_while_down = sum(creator.calls.values()) - calls_before
            assert trigger.is_running, "the broker side is fine; only job creation waits"
            await qs.start()
            await eventually(lambda: queue_depth_is(channel, queue_name, 0), timeout=30)
            await eventually(lambda: trigger.get_health().jobs_created_count >= total, timeout=30)
        finally:
            await trigger.stop()
    # about 2.5 s down, prefetch 5, backoff 0.2 s doubling: a few dozen attempts, not a hot loop
    assert attempts_while_down < 100, attempts_while_down
    jobs = await qs.list_jobs()
    assert sorted(int(job.payload["n"]) for job in jobs) == list(range(total)), "none lost, none duplicated"


async def test_stop_during_backoff_returns_the_messages(
    rabbitmq: RabbitMQServer,
    channel: AbstractChannel,
    queue_name: str,
    restartable_queue_service: RestartableQueueService,
) -> None:
    qs = restartable_queue_service
    await qs.stop()
    async with HttpJobCreator(qs.url, deadline=0.1) as http:
        trigger = RabbitMQTrigger(
            job_creator=http,
            config=spec(queue_name, prefetch=3, requeueDelaySeconds=30),
            url=rabbitmq.url,
            template=TEMPLATE,
        )
        await trigger.start()
        for i in range(5):
            await publish(channel, queue_name, {"n": i}, message_id=f"s-{i}")
        await eventually(lambda: trigger.get_health().errors_count >= 3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await trigger.stop()
        assert loop.time() - started < 5, "stop does not wait for a 30 s backoff"
    await eventually(lambda: queue_depth_is(channel, queue_name, 5))


def test_key_is_the_message_id_or_a_hash_of_the_body() -> None:
    """(aio-pika's publishers always set a message id, so the body hash is tested on its own.)"""
    trigger = RabbitMQTrigger(
        job_creator=InMemoryJobCreator(),
        config=spec("q"),
        url="amqp://u:p@127.0.0.1/",
        template=TEMPLATE,
        ref=TriggerRef(name="t", uid="u-1"),
    )

    def message(body: bytes, message_id: str | None = None) -> Any:
        return SimpleNamespace(body=body, message_id=message_id, type=None, routing_key="q")

    same = [trigger.job_request(message(b'{"a": 1}')).idempotency_key for _ in range(2)]
    other = trigger.job_request(message(b'{"a": 2}')).idempotency_key
    assert same[0] == same[1] != other
    assert same[0] == "amqp/u-1/sha256:" + hashlib.sha256(b'{"a": 1}').hexdigest()
    assert trigger.job_request(message(b"{}", "id-7")).idempotency_key == "amqp/u-1/id-7"


async def test_bindings_are_declared(rabbitmq: RabbitMQServer, channel: AbstractChannel) -> None:
    suffix = uuid.uuid4().hex[:8]
    exchange = await channel.declare_exchange(f"shop-{suffix}", aio_pika.ExchangeType.TOPIC)
    creator = InMemoryJobCreator()
    config = spec(
        f"bound-{suffix}",
        declareQueue=True,
        bindings=[{"exchange": exchange.name, "routingKey": "order.*"}],
    )
    trigger = RabbitMQTrigger(job_creator=creator, config=config, url=rabbitmq.url, template=TEMPLATE)
    await trigger.start()
    try:
        for key in ("order.placed", "user.created", "order.paid"):
            await exchange.publish(aio_pika.Message(json.dumps({"k": key}).encode()), routing_key=key)
        await eventually(lambda: len(creator.jobs) == 2)
        await asyncio.sleep(0.2)
    finally:
        await trigger.stop()
    assert sorted(job.payload["k"] for job in creator.jobs.values()) == ["order.paid", "order.placed"]
    await channel.queue_delete(f"bound-{suffix}")
    await channel.exchange_delete(exchange.name)


@pytest.mark.parametrize("case", ["bad-password", "no-queue", "no-exchange", "unreachable"])
async def test_start_fails_with_an_actionable_message(rabbitmq: RabbitMQServer, case: str) -> None:
    url, config = rabbitmq.url, spec(f"missing-{uuid.uuid4().hex[:6]}")
    if case == "bad-password":
        url = url.replace(rabbitmq.password, "wrong-Pa55word")
    elif case == "no-exchange":
        config = spec(config.queue, declareQueue=True, bindings=[{"exchange": "no-such-exchange"}])
    elif case == "unreachable":
        url = f"amqp://portico:{rabbitmq.password}@127.0.0.1:1/"
    trigger = RabbitMQTrigger(job_creator=InMemoryJobCreator(), config=config, url=url, template=TEMPLATE)
    with pytest.raises(TriggerStartError) as info:
        await trigger.start()
    assert not trigger.is_running
    expected = {
        "bad-password": "AuthenticationFailed",
        "no-queue": "NotFound",
        "no-exchange": "NotFound",
        "unreachable": "BrokerUnreachable",
    }[case]
    assert info.value.reason == expected and info.value.retryable
    message = str(info.value)
    assert rabbitmq.password not in message and "wrong-Pa55word" not in message
    assert f"127.0.0.1:{1 if case == 'unreachable' else rabbitmq.port}" in message
    if case == "no-queue":
        assert config.queue in message and "declareQueue" in message
    if case == "no-exchange":
        assert "no-such-exchange" in message
    await trigger.stop()

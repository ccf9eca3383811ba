"""Webhook deliveries into the real reference queue service through `HttpJobCreator`: a service that is
down gets the sender a 503 and stores nothing; the sender's retry of the same delivery, once the service
is back, creates exactly one job — also when the first attempt was stored but answered too late."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from portico.adapters.job_creator.http import HttpJobCreator
from portico.domain.trigger import JobTemplate, SecretRef, TriggerRef
from portico.ports.job_creator import Job, JobCreator
from portico.ports.trigger_source import StaticSecrets
from portico.sources.webhook.server import WebhookServer
from portico.sources.webhook.trigger import WebhookAuthSpec, WebhookConfig, WebhookTrigger

SECRET = "queue-test-secret"
RESPONSE_TIMEOUT = 1.0


class AnswersLate(JobCreator):
    """The queue service stores the job, but its answer arrives after the webhook's response timeout (a
    slow network on the way back)."""

    def __init__(self, inner: JobCreator, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.stored: list[str] = []

    async def create_job(self, job_type: str, payload: dict[str, Any], *args: Any, **kwargs: Any) -> Job:
        job = await self.inner.create_job(job_type, payload, *args, **kwargs)
        self.stored.append(job.id)
        await asyncio.sleep(self.delay)
        return job

    async def get_job(self, job_id: str) -> Job | None:
        return await self.inner.get_job(job_id)


@pytest.fixture
async def server() -> AsyncIterator[WebhookServer]:
    webhook_server = WebhookServer("127.0.0.1", 0)
    await webhook_server.start()
    yield webhook_server
    await webhook_server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def github_trigger(server: WebhookServer, job_creator: JobCreator) -> WebhookTrigger:
    trigger = WebhookTrigger(
        job_creator,
        WebhookConfig(
            prefix="/hooks/ci/push",
            mode="payload",
            auth=WebhookAuthSpec(type="hmac", preset="github", secret_ref=SecretRef(name="gh", key="secret")),
            response_timeout_seconds=RESPONSE_TIMEOUT,
        ),
        ref=TriggerRef(name="push", namespace="ci", uid="5f1c-uid"),
        template=JobTemplate(type="ci.build", queue="builds"),
        secrets=StaticSecrets({("gh", "secret"): SECRET}),
        server=server,
    )
    await trigger.start()
    return trigger


async def deliver(http: aiohttp.ClientSession, url: str, delivery: str) -> tuple[int, dict[str, Any], Any]:
    """One GitHub delivery, signed as GitHub does; a redelivery sends the very same request."""
    body = json.dumps({"ref": "refs/heads/main", "after": "9fceb02"}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
    }
    async with http.post(url, data=body, headers=headers) as response:
        return response.status, await response.json(), response.headers


async def test_queue_down_is_503_and_the_retried_delivery_creates_exactly_one_job(
    restartable_queue_service: Any, server: WebhookServer, http: aiohttp.ClientSession
) -> None:
    queue = restartable_queue_service
    async with HttpJobCreator(queue.url, backoff_max=0.2) as creator:
        trigger = await github_trigger(server, creator)
        await queue.stop()

        loop = asyncio.get_running_loop()
        started = loop.time()
        status, answer, headers = await deliver(http, trigger.url, "d-0001")
        assert status == 503
        assert int(headers["Retry-After"]) > 0
        assert loop.time() - started < RESPONSE_TIMEOUT + 2
        assert "job_id" not in answer

        await queue.start()
        assert await queue.list_jobs() == []
        status, first, _ = await deliver(http, trigger.url, "d-0001")
        assert status == 202
        status, again, _ = await deliver(http, trigger.url, "d-0001")
        assert (status, again) == (202, first)

        stored = await queue.list_jobs()
        assert [job.id for job in stored] == [first["job_id"]]
        job = stored[0]
        assert (job.job_type, job.queue_name, job.idempotency_key) == (
            "ci.build",
            "builds",
            "5f1c-uid:d-0001",
        )
        assert job.payload == {"ref": "refs/heads/main", "after": "9fceb02"}
        assert job.metadata["webhook.event"] == "push"
        assert job.metadata["trigger.uid"] == "5f1c-uid"
        health = trigger.get_health()
        assert health.errors_count == 1
        assert health.source_status["webhookRequests"] == {"202": 2, "503": 1}
        await trigger.stop()


async def test_a_late_answer_is_503_but_the_redelivery_finds_the_stored_job(
    restartable_queue_service: Any, server: WebhookServer, http: aiohttp.ClientSession
) -> None:
    queue = restartable_queue_service
    async with HttpJobCreator(queue.url) as creator:
        late = AnswersLate(creator, delay=RESPONSE_TIMEOUT * 2)
        trigger = await github_trigger(server, late)
        status, _, _ = await deliver(http, trigger.url, "d-0002")
        assert status == 503
        assert len(late.stored) == 1

        late.delay = 0
        status, answer, _ = await deliver(http, trigger.url, "d-0002")
        assert status == 202
        assert answer["job_id"] == late.stored[0]
        assert [job.id for job in await queue.list_jobs()] == [answer["job_id"]]
        await trigger.stop()


def _request_trigger(server: WebhookServer, creator: JobCreator, **config: Any) -> WebhookTrigger:
    return WebhookTrigger(
        creator,
        WebhookConfig(prefix="/hooks/ci/any", auth=WebhookAuthSpec(type="none"), **config),
        ref=TriggerRef(name="any", namespace="ci", uid="6a2d-uid"),
        template=JobTemplate(type="t", queue="p"),
        server=server,
    )


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("payload", "rule"),
    [
        (f'{{"x": {_nested(200)}}}', "json-depth"),
        (f'{{"x": {_nested(980)}}}', "json-depth"),
        ('{"x": 1e400}', "finite-number"),
        ('{"x": 99999999999999999999999}', "number-range"),
    ],
)
async def test_hostile_payloads_get_400_and_no_job_even_when_retried(
    queue_service: Any, server: WebhookServer, http: aiohttp.ClientSession, payload: str, rule: str
) -> None:
    """Payloads the queue service used to store while the webhook reported a failure (502: the reply
    could not be read back; a sender retrying without a delivery id made duplicates) or answered 500."""
    async with HttpJobCreator(queue_service.url) as creator:
        trigger = _request_trigger(server, creator)
        await trigger.start()
        body = f'{{"job_type": "t", "payload": {payload}}}'.encode()
        for _ in range(3):
            async with http.post(
                trigger.url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                answer = await response.json()
                assert (response.status, answer["rule"]) == (400, rule), answer
        await trigger.stop()
    assert await queue_service.list_jobs() == []
    assert trigger.metrics().by_status == {400: 3}


async def test_the_deepest_accepted_payload_is_stored_and_read_back(
    queue_service: Any, server: WebhookServer, http: aiohttp.ClientSession
) -> None:
    """Every payload the webhook accepts fits the queue service's envelope and comes back readable."""
    async with HttpJobCreator(queue_service.url) as creator:
        trigger = _request_trigger(server, creator, mode="payload")
        await trigger.start()
        body = ('{"x": ' + _nested(63) + "}").encode()
        async with http.post(
            trigger.url, data=body, headers={"Content-Type": "application/json"}
        ) as response:
            assert response.status == 202, await response.text()
            job_id = (await response.json())["job_id"]
        job = await creator.get_job(job_id)
        await trigger.stop()
    assert job is not None and job.payload == json.loads(body)


async def test_a_recursive_payload_schema_with_deep_input_is_not_a_server_error(
    queue_service: Any, server: WebhookServer, http: aiohttp.ClientSession
) -> None:
    schema = {
        "type": "object",
        "properties": {"x": {"$ref": "#/$defs/node"}},
        "$defs": {"node": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
    }
    async with HttpJobCreator(queue_service.url) as creator:
        deep_schema_trigger = WebhookTrigger(
            creator,
            WebhookConfig(
                prefix="/hooks/ci/tree",
                mode="payload",
                auth=WebhookAuthSpec(type="none"),
                payload_schema=schema,
            ),
            ref=TriggerRef(name="tree", namespace="ci", uid="7b3e-uid"),
            template=JobTemplate(type="t", queue="p"),
            server=server,
        )
        await deep_schema_trigger.start()
        for depth in (10, 63, 64, 980):
            body = ('{"x": ' + _nested(depth) + "}").encode()
            async with http.post(
                deep_schema_trigger.url, data=body, headers={"Content-Type": "application/json"}
            ) as response:
                assert response.status < 500, (depth, await response.text())
        await deep_schema_trigger.stop()

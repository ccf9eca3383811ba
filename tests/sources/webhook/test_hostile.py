"""Property-based: a webhook trigger in front of the real queue service against generated hostile
requests (deep, non-finite, oversized, surrogate-laden, control characters in names, broken bytes,
compressed and corrupt bodies, malformed header lines carrying the real token). No 5xx but a deliberate
503, a job in the queue exactly when the answer was 202, the token never echoed or logged, every answer
within bounded time and memory."""

import resource
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from portico.adapters.job_creator.http import HttpJobCreator
from portico.domain.trigger import JobTemplate, TriggerRef
from portico.sources.webhook.server import WebhookServer
from portico.sources.webhook.trigger import WebhookAuthSpec, WebhookConfig, WebhookTrigger
from portico.testing.hostile import TOKEN, Case, LogRecorder, deliberate, exchange, hostile_case, status_of

MEMORY_GROWTH_LIMIT_KB = 400_000


@dataclass
class Endpoint:
    trigger: WebhookTrigger
    port: int
    queue: Any


@pytest.fixture(params=["request", "payload"])
async def endpoint(request: pytest.FixtureRequest, queue_service: Any) -> AsyncIterator[Endpoint]:
    server = WebhookServer("127.0.0.1", 0)
    await server.start()
    async with HttpJobCreator(queue_service.url) as creator:
        trigger = WebhookTrigger(
            creator,
            WebhookConfig(
                prefix="/hooks/h/any",
                mode=request.param,
                allowed_job_types=["t"],
                auth=WebhookAuthSpec(type="bearer"),
                secret=SecretStr(TOKEN),
            ),
            ref=TriggerRef(name="any", namespace="h", uid="uid-any"),
            template=JobTemplate(type="t", queue="p"),
            server=server,
        )
        await trigger.start()
        yield Endpoint(trigger, server.port, queue_service)
        await trigger.stop()
    await server.stop()


@st.composite
def cases(draw: st.DrawFn, envelope: bool) -> Case:
    return hostile_case(lambda options: draw(st.sampled_from(options)), envelope=envelope)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_hostile_requests_are_answered_without_harm(endpoint: Endpoint, data: st.DataObject) -> None:
    case = data.draw(cases(envelope=endpoint.trigger.config.mode == "request"))
    before = len(await endpoint.queue.list_jobs())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with LogRecorder() as logs:
        answer = await exchange(endpoint.port, case.raw(endpoint.trigger.path), wait=15)
    status = status_of(answer)
    event(f"status {status}")
    assert deliberate(status), answer[:300]
    assert TOKEN.encode() not in answer
    assert not logs.leaked(TOKEN)
    after = len(await endpoint.queue.list_jobs())
    assert after == before + (1 if status == 202 else 0), (status, answer[:300])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < MEMORY_GROWTH_LIMIT_KB
    assert 500 not in endpoint.trigger.metrics().by_status

"""The operator side of webhooks: `WebhookSource` and its one shared server (routes appear and disappear
with triggers, a path has one owner)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import JobTemplate, SecretRef, TriggerRef
from portico.ports.job_trigger import TriggerStartError
from portico.ports.trigger_events import LoggingTriggerEvents
from portico.ports.trigger_source import StaticSecrets, TriggerContext
from portico.sources.webhook import WebhookTrigger
from portico.sources.webhook.source import WebhookSource
from portico.sources.webhook.spec import WebhookSpec, default_path

NO_AUTH = {"auth": {"type": "none"}}


@pytest.fixture
async def source() -> AsyncIterator[WebhookSource]:
    webhook_source = WebhookSource(host="127.0.0.1", port=0)
    assert not webhook_source.ready
    await webhook_source.open()
    yield webhook_source
    await webhook_source.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def jobs() -> InMemoryJobCreator:
    return InMemoryJobCreator()


def context(
    jobs: InMemoryJobCreator, name: str, namespace: str = "team", secrets: StaticSecrets | None = None
) -> TriggerContext:
    ref = TriggerRef(name=name, namespace=namespace, uid=f"uid-{namespace}-{name}")
    return TriggerContext(
        ref=ref,
        template=JobTemplate(type="report.daily"),
        job_creator=jobs,
        events=LoggingTriggerEvents(ref),
        secrets=secrets or StaticSecrets(namespace=namespace),
    )


def build(
    source: WebhookSource, jobs: InMemoryJobCreator, name: str, spec: dict[str, Any], **kw: Any
) -> WebhookTrigger:
    trigger = source.build(WebhookSpec.model_validate(spec), context(jobs, name, **kw))
    assert isinstance(trigger, WebhookTrigger)
    return trigger


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> int:
    async with http.post(
        url, data=json.dumps(body), headers={"Content-Type": "application/json"}
    ) as response:
        return response.status


async def test_source_shape_and_server_lifecycle(source: WebhookSource) -> None:
    assert source.name == "webhook"
    assert source.spec_model is WebhookSpec
    assert source.single_active is False
    assert source.ready
    assert source.port > 0
    spec = WebhookSpec.model_validate(
        {"auth": {"type": "hmac", "preset": "github", "secretRef": {"name": "gh", "key": "k"}}}
    )
    assert list(source.secret_refs(spec)) == [SecretRef(name="gh", key="k")]
    assert list(source.secret_refs(WebhookSpec.model_validate(NO_AUTH))) == []


async def test_routes_follow_triggers_on_one_port(
    source: WebhookSource, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    daily = build(source, jobs, "daily", NO_AUTH)
    custom = build(source, jobs, "custom", {**NO_AUTH, "path": "/hooks/custom/endpoint"})
    assert daily.path == "/hooks/team/daily" == default_path(TriggerRef(name="daily", namespace="team"))
    base = f"http://127.0.0.1:{source.port}"
    assert await post(http, base + "/hooks/team/daily", {"job_type": "report.daily"}) == 404

    await daily.start()
    await custom.start()
    assert daily.is_running and custom.is_running
    assert await post(http, base + "/hooks/team/daily", {"job_type": "report.daily"}) == 202
    assert await post(http, base + "/hooks/custom/endpoint", {"job_type": "report.daily"}) == 202
    assert daily.get_health().source_status["webhookPath"] == "/hooks/team/daily"
    assert custom.get_health().source_status["webhookPath"] == "/hooks/custom/endpoint"

    await daily.stop()
    assert await post(http, base + "/hooks/team/daily", {"job_type": "report.daily"}) == 404
    assert await post(http, base + "/hooks/custom/endpoint", {"job_type": "report.daily"}) == 202
    assert source.ready
    await custom.stop()
    assert source.server.paths == []


async def test_duplicate_path_fails_the_second_trigger_naming_the_owner(
    source: WebhookSource, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    spec = {**NO_AUTH, "path": "/hooks/shared"}
    first = build(source, jobs, "first", spec, namespace="alpha")
    second = build(source, jobs, "second", spec, namespace="beta")
    await first.start()
    with pytest.raises(TriggerStartError) as info:
        await second.start()
    assert info.value.reason == "WebhookPathConflict"
    assert "alpha/first" in str(info.value)
    assert "/hooks/shared" in str(info.value)
    assert not second.is_running
    assert source.server.owner_of("/hooks/shared") == "alpha/first"

    await first.stop()
    await second.start()
    assert source.server.owner_of("/hooks/shared") == "beta/second"
    assert (
        await post(http, f"http://127.0.0.1:{source.port}/hooks/shared", {"job_type": "report.daily"}) == 202
    )
    await second.stop()


async def test_reconfigured_trigger_takes_over_its_own_path(
    source: WebhookSource, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    old = build(source, jobs, "daily", NO_AUTH)
    new = build(source, jobs, "daily", {**NO_AUTH, "allowedJobTypes": ["report.weekly"]})
    await old.start()
    await new.start()
    await old.stop()
    assert new.is_running
    url = f"http://127.0.0.1:{source.port}/hooks/team/daily"
    assert await post(http, url, {"job_type": "report.weekly"}) == 202
    assert await post(http, url, {"job_type": "report.daily"}) == 403
    await new.stop()


async def test_closed_server_means_not_running(jobs: InMemoryJobCreator) -> None:
    source = WebhookSource(host="127.0.0.1", port=0)
    trigger = build(source, jobs, "daily", NO_AUTH)
    with pytest.raises(TriggerStartError) as info:
        await trigger.start()
    assert info.value.reason == "WebhookServerNotReady"
    await source.open()
    await trigger.start()
    assert trigger.is_running
    await source.close()
    assert not trigger.is_running
    await trigger.stop()

"""The operator side of webhooks: `WebhookSource` and its one shared server (routes appear and disappear
with triggers, a path has one owner), and `spec.webhook` validation as the API server and
`portico validate` see it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import JobTemplate, SecretRef, TriggerRef
from portico.ports.job_trigger import TriggerStartError
from portico.ports.trigger_events import LoggingTriggerEvents
from portico.ports.trigger_source import StaticSecrets, TriggerContext
from portico.sources.webhook.trigger import (
    WebhookConfig,
    WebhookSource,
    WebhookSpec,
    WebhookTrigger,
    default_path,
)

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


# --- spec validation -----------------------------------------------------------------------------------


def test_spec_defaults_and_wire_names() -> None:
    spec = WebhookSpec.model_validate(
        {
            "auth": {"type": "hmac", "preset": "stripe", "secretRef": {"name": "s", "key": "k"}},
            "mode": "payload",
            "rateLimit": {"requestsPerSecond": 2.5},
            "recordHeaders": ["User-Agent"],
        }
    )
    assert (spec.max_body_bytes, spec.response_timeout_seconds, spec.auth.tolerance_seconds) == (
        1048576,
        5.0,
        300,
    )
    assert spec.rate_limit is not None and spec.rate_limit.effective_burst == 3
    config = WebhookConfig.from_spec(spec, path="/hooks/a/b")
    assert (config.prefix, config.mode, config.record_headers) == ("/hooks/a/b", "payload", ["User-Agent"])
    assert config.auth.secret_ref == SecretRef(name="s", key="k")
    assert spec.to_resource()["rateLimit"] == {"requestsPerSecond": 2.5}


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({}, "auth"),
        ({"auth": {"type": "hmac", "preset": "github"}}, "needs auth.secretRef"),
        ({"auth": {"type": "bearer"}}, "needs auth.secretRef"),
        (
            {"auth": {"type": "bearer", "preset": "github", "secretRef": {"name": "a", "key": "b"}}},
            "hmac only",
        ),
        ({"auth": {"type": "hmac", "secretRef": {"name": "a", "key": "b"}}}, "signature header"),
        (
            {
                "auth": {
                    "type": "hmac",
                    "preset": "github",
                    "header": "X-Sig",
                    "secretRef": {"name": "a", "key": "b"},
                }
            },
            "fixed by the github preset",
        ),
        (
            {
                "auth": {
                    "type": "hmac",
                    "preset": "slack",
                    "algorithm": "sha1",
                    "secretRef": {"name": "a", "key": "b"},
                }
            },
            "sha256",
        ),
        ({**NO_AUTH, "payloadSchema": {"type": "objekt"}}, "payloadSchema is not a valid JSON Schema"),
        ({**NO_AUTH, "payloadSchema": {"properties": {"a": {"minLength": -1}}}}, "$.properties.a.minLength"),
        ({**NO_AUTH, "payloadSchema": {"$ref": "https://example.org/s.json"}}, "only refer to its own parts"),
        (
            {**NO_AUTH, "payloadSchema": {"properties": {"a": {"$ref": "#/$defs/gone"}}}},
            "'#/$defs/gone' points to nothing",
        ),
        (
            {**NO_AUTH, "jobTypeFromHeader": {"header": "X-Event", "mapping": {"push": "ci"}}},
            "mode payload only",
        ),
        (
            {
                **NO_AUTH,
                "mode": "payload",
                "jobTypeFromHeader": {"header": "X-Event", "mapping": {"push": ""}},
            },
            "mapping",
        ),
        ({**NO_AUTH, "path": "hooks/no-slash"}, "path"),
        ({**NO_AUTH, "path": "/hooks/../admin"}, "'..'"),
        ({**NO_AUTH, "path": "/hooks/trailing/"}, "path"),
        ({**NO_AUTH, "maxBodyBytes": 0}, "maxBodyBytes"),
        ({**NO_AUTH, "maxBodyBytes": 11 * 1024 * 1024}, "maxBodyBytes"),
        ({**NO_AUTH, "responseTimeoutSeconds": 10}, "responseTimeoutSeconds"),
        ({**NO_AUTH, "rateLimit": {"requestsPerSecond": 0}}, "requestsPerSecond"),
        ({**NO_AUTH, "recordHeaders": ["Bad Header"]}, "recordHeaders"),
        ({**NO_AUTH, "allowedJobTypes": [""]}, "allowedJobTypes"),
        ({**NO_AUTH, "unknownField": 1}, "unknownField"),
    ],
)
def test_invalid_specs_are_refused_with_the_problem(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        WebhookSpec.model_validate(spec)
    assert problem in str(info.value)


def test_local_references_and_data_that_looks_like_one_are_fine() -> None:
    schema = {
        "$defs": {"amount": {"type": "integer"}},
        "properties": {"a": {"$ref": "#/$defs/amount"}, "b": {"const": {"$ref": "not a reference"}}},
    }
    assert WebhookSpec.model_validate({**NO_AUTH, "payloadSchema": schema}).payload_schema == schema


def test_cel_rules_are_declared_for_the_crd() -> None:
    """The API server enforces these; the model validators above enforce the same for `portico validate`."""
    schema = WebhookSpec.model_json_schema(by_alias=True)
    rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert any("secretRef" in rule for rule in rules)
    auth_rules = [r["rule"] for r in schema["$defs"]["WebhookAuthSpec"]["x-kubernetes-validations"]]
    assert len(auth_rules) == 4


def test_library_config_needs_a_secret_for_authentication() -> None:
    with pytest.raises(ValidationError, match="needs secret"):
        WebhookConfig(auth={"type": "bearer"})
    config = WebhookConfig(auth={"type": "bearer"}, secret="t0ken")
    assert "t0ken" not in repr(config)
    with pytest.raises(ValidationError, match="prefix"):
        WebhookConfig(prefix="webhooks")

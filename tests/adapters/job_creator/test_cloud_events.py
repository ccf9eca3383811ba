"""`CloudEventsJobCreator` against a real HTTP sink that reads every request with the CloudEvents SDK's
HTTP binding (binary content mode), so what we send is what CloudEvents consumers parse. Retries run
on the fast-forwarded loop clock."""

import asyncio
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from cloudevents.core.bindings.http import HTTPMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

from portico.adapters.job_creator.cloud_events import (
    SIGNATURE_HEADER,
    CloudEventsJobCreator,
    CloudEventsTarget,
    CloudEventsTargetSpec,
)
from portico.domain.trigger import SecretRef, TriggerRef
from portico.ports.job_creator import JobCreationError
from portico.ports.job_target import TargetContext
from portico.ports.trigger_source import SecretNotFoundError, StaticSecrets
from tests.adapters.job_creator.test_http import Behaviour, ScriptedServer, failing, server

__all__ = ["server"]

SOURCE = "/apis/triggers.portico.dev/v1alpha1/namespaces/ns/jobtriggers/releases"


def parse(headers: dict[str, str], body: bytes) -> Any:
    """The event as the SDK reads it; raises if the request is not a valid binary-mode CloudEvent."""
    return from_binary(HTTPMessage(headers=headers, body=body), JSONFormat())


def accepted(status: int = 202) -> Behaviour:
    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        parse(dict(request.headers), body)
        return web.Response(status=status)

    return answer


@pytest.mark.looptime
async def test_a_job_is_one_binary_mode_event_the_sdk_reads(server: ScriptedServer) -> None:
    server.script = [accepted()]
    async with CloudEventsJobCreator(server.url + "/sink", source=SOURCE) as creator:
        job = await creator.create_job(
            "release.published",
            {"tag": "v1.2.0", "nested": {"ünï": [1, 2]}},
            queue_name="deploys",
            priority=7,
            metadata={"trigger.name": "releases", "note": 'say "hi" 100%'},
            idempotency_key="webhook/uid-1/delivery-42",
        )
    [seen] = server.seen
    assert (seen.method, seen.path) == ("POST", "/sink")
    event = parse(seen.headers, seen.body)
    assert event.get_id() == "webhook/uid-1/delivery-42"
    assert event.get_source() == SOURCE
    assert event.get_type() == "release.published"
    assert event.get_specversion() == "1.0"
    assert isinstance(event.get_time(), datetime) and event.get_time().tzinfo is not None
    assert event.get_data() == {"tag": "v1.2.0", "nested": {"ünï": [1, 2]}}
    assert event.get_extension("queue") == "deploys"
    assert event.get_extension("priority") == "7"
    assert json.loads(event.get_extension("jobmetadata")) == {
        "trigger.name": "releases",
        "note": 'say "hi" 100%',
    }
    assert seen.headers["Content-Type"] == "application/json"
    assert job.id == "webhook/uid-1/delivery-42" and not job.existing
    assert await creator.get_job(job.id) is None


@pytest.mark.looptime
async def test_keys_that_are_not_header_safe_become_a_stable_hash(server: ScriptedServer) -> None:
    server.script = [accepted()]
    async with CloudEventsJobCreator(server.url, source=SOURCE) as creator:
        first = await creator.create_job("t", {}, idempotency_key="file/ünïcode name.csv")
        again = await creator.create_job("t", {}, idempotency_key="file/ünïcode name.csv")
        percent = await creator.create_job("t", {}, idempotency_key="a%20b")
    assert first.id == again.id and first.id.startswith("sha256:") and again.existing
    assert [parse(s.headers, s.body).get_id() for s in server.seen] == [first.id, "a%20b"]
    assert percent.id == "a%20b"


@pytest.mark.looptime
async def test_retries_resend_the_same_event_and_any_2xx_accepts(server: ScriptedServer) -> None:
    server.script = [failing(503), failing(429, headers={"Retry-After": "3"}), accepted(200)]
    async with CloudEventsJobCreator(server.url, source=SOURCE) as creator:
        await creator.create_job("t", {"a": 1}, idempotency_key="k-1")
    assert len(server.seen) == 3
    events = [parse(s.headers, s.body) for s in server.seen]
    assert {(e.get_id(), e.get_time(), json.dumps(e.get_data())) for e in events} == {
        ("k-1", events[0].get_time(), '{"a": 1}')
    }, "every attempt is the same event: same id, same time, same data"
    assert server.seen[2].at - server.seen[1].at == pytest.approx(3, abs=0.01)
    assert creator.requests_by_outcome == {"5xx": 1, "4xx": 1, "2xx": 1}


@pytest.mark.looptime
@pytest.mark.parametrize("status", [400, 401, 404, 301])
async def test_a_refusal_is_final_and_not_retried(server: ScriptedServer, status: int) -> None:
    server.script = [failing(status, error="no such event type")]
    async with CloudEventsJobCreator(server.url, source=SOURCE) as creator:
        with pytest.raises(JobCreationError) as caught:
            await creator.create_job("t", {}, idempotency_key="k")
    assert not caught.value.retryable and caught.value.status == status
    assert "CloudEvents sink" in str(caught.value) and len(server.seen) == 1


@pytest.mark.looptime
async def test_a_sink_that_stays_down_fails_retryably_within_the_deadline(server: ScriptedServer) -> None:
    server.script = [failing(503)]
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with CloudEventsJobCreator(server.url, source=SOURCE, deadline=20) as creator:
        with pytest.raises(JobCreationError) as caught:
            await creator.create_job("t", {}, idempotency_key="k")
    assert caught.value.retryable and loop.time() - start <= 20
    assert f"CloudEvents sink {server.url}" in str(caught.value)
    assert len(server.seen) > 2


@pytest.mark.looptime
async def test_bearer_token_and_hmac_signature_from_secrets(server: ScriptedServer) -> None:
    server.script = [accepted()]
    secrets = StaticSecrets({("sink", "token"): "tok-123", ("sink", "hmac"): "signing-key"}, namespace="ns")
    spec = CloudEventsTargetSpec.model_validate(
        {
            "url": server.url,
            "tokenSecretRef": {"name": "sink", "key": "token"},
            "hmacSecretRef": {"name": "sink", "key": "hmac"},
        }
    )
    target = CloudEventsTarget()
    assert target.secret_refs(spec) == (
        SecretRef(name="sink", key="token"),
        SecretRef(name="sink", key="hmac"),
    )
    context = TargetContext(
        ref=TriggerRef(name="releases", namespace="ns", uid="u"),
        shared=None,
        secrets=secrets,
        object_path=SOURCE,
    )  # type: ignore[arg-type]
    creator = target.build(spec, context)
    try:
        await creator.create_job("t", {"x": 1}, idempotency_key="k-9")
    finally:
        await creator.close()
    [seen] = server.seen
    assert seen.headers["Authorization"] == "Bearer tok-123"
    event = parse(seen.headers, seen.body)
    assert event.get_source() == SOURCE
    expected = hmac.new(
        b"signing-key",
        f"{seen.headers['ce-id']}.{seen.headers['ce-time']}.".encode() + seen.body,
        hashlib.sha256,
    ).hexdigest()
    assert seen.headers[SIGNATURE_HEADER] == f"sha256={expected}"


def test_a_missing_secret_stops_the_build() -> None:
    spec = CloudEventsTargetSpec.model_validate(
        {"url": "http://sink", "hmacSecretRef": {"name": "absent", "key": "k"}}
    )
    context = TargetContext(ref=TriggerRef(name="t", namespace="ns"), shared=None)  # type: ignore[arg-type]
    with pytest.raises(SecretNotFoundError):
        CloudEventsTarget().build(spec, context)


@pytest.mark.looptime
async def test_an_accepted_key_is_not_sent_again_and_comes_back_as_existing(server: ScriptedServer) -> None:
    server.script = [accepted()]
    async with CloudEventsJobCreator(server.url, source=SOURCE, remember=2) as creator:
        first = await creator.create_job("t", {"n": 1}, idempotency_key="a")
        again = await creator.create_job("t", {"n": 1}, idempotency_key="a")
        await creator.create_job("t", {}, idempotency_key="b")
        await creator.create_job("t", {}, idempotency_key="c")
        forgotten = await creator.create_job("t", {}, idempotency_key="a")
    assert not first.existing and again.existing and again.id == first.id
    assert [s.headers["ce-id"] for s in server.seen] == ["a", "b", "c", "a"], "only the last 2 are kept"
    assert not forgotten.existing

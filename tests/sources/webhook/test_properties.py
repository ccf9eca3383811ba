"""Property-based: whatever arrives at a webhook — any method, content type, headers, body, signed or
not — is answered with a deliberate status, never a 500, and a job exists only behind a 202."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import JobTemplate, SecretRef, TriggerRef
from portico.ports.trigger_source import StaticSecrets
from portico.sources.webhook.server import WebhookServer
from portico.sources.webhook.trigger import WebhookAuthSpec, WebhookConfig, WebhookTrigger

SECRET = "property-secret"
PATH = "/hooks/prop/hook"
MAX_BODY = 2048
DELIBERATE = {200, 202, 400, 401, 403, 404, 405, 413, 415}
EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
near_requests = st.fixed_dictionaries(
    {},
    optional={
        "job_type": st.one_of(st.sampled_from(["ok.job", "ok.job", "other.job", ""]), json_values),
        "payload": st.one_of(st.fixed_dictionaries({}, optional={"amount": json_values}), json_values),
        "queue_name": st.one_of(st.none(), st.text(max_size=300), json_values),
        "priority": st.one_of(st.integers(), json_values),
        "extra": json_values,
    },
)
bodies = st.one_of(
    st.integers(0, 10**6).map(
        lambda n: json.dumps({"job_type": "ok.job", "payload": {"amount": n}}).encode()
    ),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_requests.map(lambda v: json.dumps(v).encode()),
    st.integers(MAX_BODY - 10, MAX_BODY + 200).map(
        lambda n: b'{"job_type": "ok.job", "x": "' + b"a" * n + b'"}'
    ),
    st.sampled_from(
        [
            b"",
            b"{",
            b'{"job_type": NaN}',
            b'{"job_type": "ok.job", "payload": {"a": "\\udc00"}}',
            b"[" * 5000 + b"]" * 5000,
            b'{"a": 1' + b"0" * 5000 + b"}",
        ]
    ),
)
content_types = st.one_of(
    st.just("application/json"),
    st.just("application/json"),
    st.just("application/json"),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "",
            "application/x+json",
            "multipart/form-data",
        ]
    ),
    header_text,
)
header_names = st.sampled_from(
    [
        "X-Hub-Signature-256",
        "Idempotency-Key",
        "X-GitHub-Delivery",
        "X-GitHub-Event",
        "Stripe-Signature",
        "X-Slack-Signature",
        "X-Slack-Request-Timestamp",
        "Content-Encoding",
        "X-Anything",
    ]
)


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[str, InMemoryJobCreator]]:
    server = WebhookServer("127.0.0.1", 0)
    await server.start()
    jobs = InMemoryJobCreator()
    trigger = WebhookTrigger(
        jobs,
        WebhookConfig(
            prefix=PATH,
            allowed_job_types=["ok.job"],
            auth=WebhookAuthSpec(type="hmac", preset="github", secret_ref=SecretRef(name="s", key="k")),
            payload_schema={"type": "object", "properties": {"amount": {"type": "integer", "minimum": 0}}},
            max_body_bytes=MAX_BODY,
        ),
        ref=TriggerRef(name="hook", namespace="prop"),
        template=JobTemplate(type="ok.job"),
        secrets=StaticSecrets({("s", "k"): SECRET}),
        server=server,
    )
    await trigger.start()
    yield server.url, jobs
    await trigger.stop()
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(skip_auto_headers=("Content-Type", "Content-Encoding")) as session:
        yield session


@EXAMPLES
@given(
    method=st.sampled_from(["POST"] * 16 + ["GET", "PUT", "DELETE", "OPTIONS"]),
    path=st.sampled_from([PATH] * 12 + [PATH + "/", "/hooks/prop", "/", PATH + "/x"]),
    content_type=content_types,
    headers=st.dictionaries(header_names, header_text, max_size=4),
    body=bodies,
    signed=st.sampled_from([True, True, True, False]),
)
async def test_any_request_gets_a_deliberate_answer_and_jobs_only_with_202(
    endpoint: tuple[str, InMemoryJobCreator],
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    content_type: str,
    headers: dict[str, str],
    body: bytes,
    signed: bool,
) -> None:
    base, jobs = endpoint
    sent: dict[str, Any] = dict(headers)
    if content_type:
        sent["Content-Type"] = content_type
    if signed:
        sent["X-Hub-Signature-256"] = sign(body)
    before = set(jobs.jobs)
    async with http.request(method, base + path, data=body, headers=sent) as response:
        status = response.status
        answer = await response.read()
    event(f"status {status}")
    assert status in DELIBERATE, (status, answer)
    new_jobs = set(jobs.jobs) - before
    if status == 202:
        assert json.loads(answer)["job_id"] in jobs.jobs
    else:
        assert not new_jobs, status


malformed_bodies = st.one_of(
    st.binary(max_size=200).filter(lambda b: not _is_json(b)),
    json_values.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    near_requests.filter(lambda v: not _valid_request(v)).map(lambda v: json.dumps(v).encode()),
)


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def _valid_request(value: dict[str, Any]) -> bool:
    payload = value.get("payload", {})
    return (
        set(value) <= {"job_type", "payload", "queue_name", "priority"}
        and value.get("job_type") == "ok.job"
        and isinstance(payload, dict)
        and (
            "amount" not in payload
            or (type(payload["amount"]) is int and payload["amount"] >= 0)
            or (
                isinstance(payload["amount"], float)
                and payload["amount"].is_integer()
                and payload["amount"] >= 0
            )
        )
        and (
            value.get("queue_name") is None
            or (isinstance(value["queue_name"], str) and 1 <= len(value["queue_name"]) <= 253)
        )
        and (
            value.get("priority") is None
            or (type(value["priority"]) is int and -1000 <= value["priority"] <= 1000)
        )
    )


@EXAMPLES
@given(body=malformed_bodies, idempotency_key=st.one_of(st.none(), header_text))
async def test_malformed_bodies_correctly_signed_are_4xx_and_never_a_job(
    endpoint: tuple[str, InMemoryJobCreator],
    http: aiohttp.ClientSession,
    body: bytes,
    idempotency_key: str | None,
) -> None:
    base, jobs = endpoint
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body)}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    async with http.post(base + PATH, data=body, headers=headers) as response:
        assert response.status in (400, 403, 413), await response.text()
    assert not jobs.jobs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(min_size=1, max_size=400))
async def test_garbage_on_the_socket_never_gets_a_5xx(
    endpoint: tuple[str, InMemoryJobCreator], garbage: bytes
) -> None:
    base, jobs = endpoint
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"POST " + PATH.encode() + b" HTTP/1.1\r\n" + garbage + b"\r\n\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=5)
    except (TimeoutError, ConnectionError):
        status_line = b""
    finally:
        writer.close()
    if status_line:
        assert not status_line.split(b" ")[1].startswith(b"5"), status_line
    assert not jobs.jobs

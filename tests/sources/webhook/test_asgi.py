"""The webhook endpoint in an ASGI application: `WebhookTrigger.router` in FastAPI, the plain ASGI
application without FastAPI (served alone, mounted under a prefix, with its lifespan), and the same
answers as the operator's aiohttp server for the same requests."""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.routing import Mount

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import JobTemplate, TriggerRef
from portico.sources.webhook import WebhookTrigger
from portico.sources.webhook.asgi import WebhookASGI
from portico.sources.webhook.server import WebhookServer
from portico.sources.webhook.spec import WebhookAuthSpec, WebhookConfig

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def bearer_config(**options: Any) -> WebhookConfig:
    return WebhookConfig(
        prefix="/webhooks",
        allowed_job_types=["email.send"],
        auth=WebhookAuthSpec(type="bearer"),
        secret=SecretStr(TOKEN),
        max_body_bytes=1024,
        **options,
    )


def client(app: Any, root_path: str = "") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, root_path=root_path), base_url="http://t")


@pytest.fixture
def jobs() -> InMemoryJobCreator:
    return InMemoryJobCreator()


@pytest.fixture
def without_fastapi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)


async def test_fastapi_includes_the_router_and_serves_post_prefix_jobs(jobs: InMemoryJobCreator) -> None:
    trigger = WebhookTrigger(job_creator=jobs, config=bearer_config())
    app = FastAPI()
    app.include_router(trigger.router)
    body = {
        "job_type": "email.send",
        "payload": {"to": "a@example.org"},
        "queue_name": "emails",
        "priority": 5,
    }
    async with client(app) as http:
        assert (await http.post("/webhooks/jobs", json=body, headers=AUTH)).status_code == 404
        await trigger.start()
        answer = await http.post("/webhooks/jobs", json=body, headers=AUTH)
        assert answer.status_code == 202, answer.text
        job = jobs.jobs[answer.json()["job_id"]]
        assert (job.job_type, job.queue_name, job.priority, job.payload) == (
            "email.send",
            "emails",
            5,
            {"to": "a@example.org"},
        )
        assert answer.headers["server"] == "portico"
        assert (await http.post("/webhooks/jobs", json=body)).status_code == 401
        refused = await http.post("/webhooks/jobs", json={**body, "job_type": "admin.drop"}, headers=AUTH)
        assert (refused.status_code, refused.json()) == (
            403,
            {"error": "job type 'admin.drop' is not allowed here"},
        )
        get = await http.get("/webhooks/jobs")
        assert (get.status_code, get.headers["allow"]) == (405, "POST")
        assert (await http.post("/elsewhere", json=body, headers=AUTH)).status_code == 404
    assert trigger.is_running
    with pytest.raises(RuntimeError, match="not listening itself"):
        _ = trigger.url
    await trigger.stop()
    assert not trigger.is_running
    assert trigger.get_health().jobs_created_count == 1
    assert trigger.metrics().by_status == {404: 1, 202: 1, 401: 1, 403: 1}


def _requests() -> list[tuple[bytes, dict[str, str]]]:
    valid = json.dumps({"job_type": "email.send", "payload": {"n": 1}}).encode()
    return [
        (valid, AUTH),
        (valid, {**AUTH, "Authorization": "Bearer wrong"}),
        (valid, {**AUTH, "Content-Type": "text/plain"}),
        (b'{"job_type": "email.send", "payload": [1]}', AUTH),
        (b'{"job_type": ', AUTH),
        (b'{"job_type": "email.send", "payload": {"n": "x"}}', AUTH),
        (json.dumps({"job_type": "email.send", "payload": {"n": 1, "pad": "x" * 2000}}).encode(), AUTH),
        (gzip.compress(valid), {**AUTH, "Content-Encoding": "gzip"}),
        (zlib.compress(valid), {**AUTH, "Content-Encoding": "deflate"}),
        (b"not gzip at all", {**AUTH, "Content-Encoding": "gzip"}),
        (valid, {**AUTH, "Content-Encoding": "br"}),
        (
            gzip.compress(b'{"job_type": "email.send", "payload": {"pad": "' + b"0" * 100_000 + b'"}}'),
            {**AUTH, "Content-Encoding": "gzip"},
        ),
        (valid, {**AUTH, "Idempotency-Key": "bad key with spaces"}),
    ]


async def test_the_asgi_router_answers_as_the_aiohttp_server_does(jobs: InMemoryJobCreator) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    routed = WebhookTrigger(jobs, bearer_config(payload_schema=schema), ref=TriggerRef(name="asgi"))
    app = FastAPI()
    app.include_router(routed.router)
    server = WebhookServer("127.0.0.1", 0)
    await server.start()
    served = WebhookTrigger(
        jobs, bearer_config(payload_schema=schema), ref=TriggerRef(name="aio"), server=server
    )
    await routed.start()
    await served.start()
    try:
        async with client(app) as asgi, aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as aio:
            for body, headers in _requests():
                via_asgi = await asgi.post("/webhooks/jobs", content=body, headers=headers)
                async with aio.post(served.url, data=body, headers=headers) as response:
                    via_aiohttp = (response.status, await response.read())
                if via_aiohttp[0] == 202:
                    assert via_asgi.status_code == 202
                else:
                    assert (via_asgi.status_code, via_asgi.content) == via_aiohttp, (body[:60], headers)
    finally:
        await routed.stop()
        await served.stop()
        await server.stop()
    # aiohttp's parser refuses an unknown Content-Encoding before the trigger sees the request.
    assert routed.metrics().by_status == {
        **served.metrics().by_status,
        415: served.metrics().by_status[415] + 1,
    }
    assert set(routed.metrics().by_status) == {202, 400, 401, 413, 415}


@pytest.mark.usefixtures("without_fastapi")
async def test_without_fastapi_the_router_is_a_plain_asgi_application(jobs: InMemoryJobCreator) -> None:
    trigger = WebhookTrigger(jobs, bearer_config())
    router = trigger.router
    assert isinstance(router, WebhookASGI)
    assert trigger.router is router
    await trigger.start()
    body = {"job_type": "email.send"}
    async with client(router) as http:
        assert (await http.post("/webhooks/jobs", json=body, headers=AUTH)).status_code == 202
        assert (await http.post("/webhooks/jobs/", json=body, headers=AUTH)).status_code == 202
        other = await http.post("/webhooks/other", json=body, headers=AUTH)
        assert (other.status_code, other.json()) == (404, {"error": "no webhook at this path"})
    async with client(router, root_path="/api") as http:
        assert (await http.post("/api/webhooks/jobs", json=body, headers=AUTH)).status_code == 202
    mounted = Starlette(routes=[Mount("/api", app=router)])
    async with client(mounted) as http:
        assert (await http.post("/api/webhooks/jobs", json=body, headers=AUTH)).status_code == 202
    await trigger.stop()
    assert len(jobs.jobs) == 4


@pytest.mark.usefixtures("without_fastapi")
async def test_served_alone_its_lifespan_starts_and_stops_the_trigger(jobs: InMemoryJobCreator) -> None:
    trigger = WebhookTrigger(jobs, bearer_config())
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = incoming.pop(0)
        if message["type"] == "lifespan.shutdown":
            assert trigger.is_running
        return message

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await trigger.router({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert not trigger.is_running


@pytest.mark.usefixtures("without_fastapi")
async def test_a_failing_start_fails_the_lifespan_startup(jobs: InMemoryJobCreator) -> None:
    config = WebhookConfig(auth=WebhookAuthSpec(type="bearer", secret_ref={"name": "gone", "key": "k"}))
    trigger = WebhookTrigger(jobs, config)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await trigger.router({"type": "lifespan"}, receive, send)
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "no secret configured" in sent[0]["message"]


@pytest.mark.usefixtures("without_fastapi")
async def test_a_client_gone_mid_body_is_recorded_and_makes_no_job(jobs: InMemoryJobCreator) -> None:
    trigger = WebhookTrigger(jobs, bearer_config())
    await trigger.start()
    messages = [
        {"type": "http.request", "body": b'{"job_type"', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        pass

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/webhooks/jobs",
        "headers": [(b"authorization", f"Bearer {TOKEN}".encode()), (b"content-type", b"application/json")],
    }
    await trigger.router(scope, receive, send)
    await trigger.stop()
    assert trigger.metrics().by_status == {499: 1}
    assert not jobs.jobs


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_router_and_a_shared_server_can_serve_one_trigger(
    jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    server = WebhookServer("127.0.0.1", 0)
    await server.start()
    trigger = WebhookTrigger(
        jobs,
        WebhookConfig(path="/hooks/app", mode="payload"),
        template=JobTemplate(type="app.event"),
        server=server,
    )
    app = FastAPI()
    app.include_router(trigger.router)
    await trigger.start()
    async with client(app) as asgi:
        assert (await asgi.post("/hooks/app", json={"a": 1})).status_code == 202
    async with http.post(trigger.url, json={"a": 2}) as response:
        assert response.status == 202
    await trigger.stop()
    await server.stop()
    assert sorted(job.payload["a"] for job in jobs.jobs.values()) == [1, 2]

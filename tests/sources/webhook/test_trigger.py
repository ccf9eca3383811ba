"""The webhook trigger through real HTTP: every status code it answers, the library API, delivery ids
as idempotency keys, rate limiting, the response timeout, secret rotation, metrics and logs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import JobTemplate, SecretRef, TriggerRef
from portico.ports.job_creator import Job, JobCreationError, JobCreator
from portico.ports.job_trigger import TriggerStartError
from portico.ports.trigger_events import TriggerEvents
from portico.ports.trigger_source import StaticSecrets
from portico.sources.webhook import (
    RateLimitSpec,
    WebhookAuthSpec,
    WebhookConfig,
    WebhookJobRequest,
    WebhookTrigger,
)
from portico.sources.webhook.metrics import LATENCY_BUCKETS
from portico.sources.webhook.server import WebhookServer
from tests.sources.conftest import RecordingEvents

SECRET = "s3cr3t-signing-key"
GITHUB_AUTH = WebhookAuthSpec(type="hmac", preset="github", secret_ref=SecretRef(name="hook", key="secret"))


class HangingJobCreator(JobCreator):
    """A queue service that never answers: records that the attempt was cancelled, not abandoned."""

    def __init__(self) -> None:
        self.attempts = 0
        self.cancelled = 0

    async def create_job(self, job_type: str, payload: dict[str, Any], *args: Any, **kwargs: Any) -> Job:
        self.attempts += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")

    async def get_job(self, job_id: str) -> Job | None:
        return None


class FailingJobCreator(InMemoryJobCreator):
    """Refuses the first `failures` jobs with the given error, then behaves."""

    def __init__(self, failures: int, *, retryable: bool, status: int = 503) -> None:
        super().__init__()
        self.failures = failures
        self.retryable = retryable
        self.status = status

    async def create_job(self, job_type: str, payload: dict[str, Any], *args: Any, **kwargs: Any) -> Job:
        if self.failures > 0:
            self.failures -= 1
            raise JobCreationError(
                f"queue service answered {self.status}", retryable=self.retryable, status=self.status
            )
        return await super().create_job(job_type, payload, *args, **kwargs)


@pytest.fixture
async def server() -> AsyncIterator[WebhookServer]:
    webhook_server = WebhookServer("127.0.0.1", 0)
    await webhook_server.start()
    yield webhook_server
    await webhook_server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as session:
        yield session


@pytest.fixture
def jobs() -> InMemoryJobCreator:
    return InMemoryJobCreator()


@pytest.fixture
def secrets() -> StaticSecrets:
    return StaticSecrets({("hook", "secret"): SECRET}, namespace="team")


async def serve(
    server: WebhookServer,
    job_creator: JobCreator,
    *,
    name: str = "hook",
    template: JobTemplate | None = None,
    secrets: StaticSecrets | None = None,
    events: TriggerEvents | None = None,
    **config: Any,
) -> WebhookTrigger:
    config.setdefault("path", f"/hooks/team/{name}")
    trigger = WebhookTrigger(
        job_creator,
        WebhookConfig(**config),
        ref=TriggerRef(name=name, namespace="team", uid=f"uid-{name}"),
        template=template,
        events=events,
        secrets=secrets,
        server=server,
    )
    await trigger.start()
    return trigger


def github_headers(body: bytes, secret: str = SECRET, **extra: str) -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature-256": signature, **extra}


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    hdrs = {"Content-Type": "application/json"} if headers is None else headers
    async with http.post(url, data=data, headers=hdrs) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else {}), response.headers


# --- the library API, as in the seed ----------------------------------------------------------------


async def test_seed_api_serves_its_own_endpoint(
    jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger = WebhookTrigger(
        job_creator=jobs, config=WebhookConfig(prefix="/webhooks", allowed_job_types=["email.send"], port=0)
    )
    await trigger.start()
    await trigger.start()
    url = trigger.url
    try:
        assert trigger.is_running
        request = WebhookJobRequest(job_type="email.send", payload={"to": "a@example.org"}, priority=3)
        status, body, _ = await post(http, url, request.model_dump(exclude_none=True))
        assert status == 202
        job = jobs.jobs[body["job_id"]]
        assert (job.job_type, job.payload, job.priority, job.queue_name) == (
            "email.send",
            {"to": "a@example.org"},
            3,
            "default",
        )
        assert job.metadata["trigger.source"] == "webhook"
        assert trigger.get_health().jobs_created_count == 1
    finally:
        await trigger.stop()
    assert not trigger.is_running
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, url, {"job_type": "email.send"})


async def test_own_server_port_in_use_fails_start(jobs: InMemoryJobCreator, server: WebhookServer) -> None:
    trigger = WebhookTrigger(jobs, WebhookConfig(port=server.port))
    with pytest.raises(TriggerStartError) as info:
        await trigger.start()
    assert info.value.reason == "ListenFailed"
    assert not trigger.is_running


async def test_request_mode_uses_template_defaults_and_body_overrides(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    template = JobTemplate(
        type="report.daily", queue="reports", priority=5, payload={"fmt": "pdf"}, metadata={"team": "finance"}
    )
    trigger = await serve(server, jobs, template=template, allowed_job_types=["report.daily", "report.adhoc"])
    status, body, _ = await post(http, trigger.url, {"job_type": "report.daily", "payload": {"day": "mon"}})
    assert status == 202
    job = jobs.jobs[body["job_id"]]
    assert (job.queue_name, job.priority, job.payload) == ("reports", 5, {"fmt": "pdf", "day": "mon"})
    assert job.metadata["team"] == "finance"
    assert job.metadata["trigger.namespace"] == "team"
    assert job.idempotency_key is None

    status, body, _ = await post(
        http, trigger.url, {"job_type": "report.adhoc", "queue_name": "urgent", "priority": -3, "payload": {}}
    )
    assert status == 202
    job = jobs.jobs[body["job_id"]]
    assert (job.job_type, job.queue_name, job.priority) == ("report.adhoc", "urgent", -3)


async def test_request_mode_without_allowed_list_accepts_only_the_template_type(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger = await serve(server, jobs, template=JobTemplate(type="report.daily"))
    assert (await post(http, trigger.url, {"job_type": "report.daily"}))[0] == 202
    status, body, _ = await post(http, trigger.url, {"job_type": "admin.drop_all"})
    assert status == 403
    assert "admin.drop_all" in body["error"]
    assert len(jobs.jobs) == 1


# --- status codes -------------------------------------------------------------------------------------


async def test_disallowed_job_type_is_403(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger = await serve(server, jobs, allowed_job_types=["email.send"])
    status, _, _ = await post(http, trigger.url, {"job_type": "email.bulk"})
    assert status == 403
    assert not jobs.jobs


async def test_unknown_path_is_404_and_other_methods_405(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger = await serve(server, jobs)
    status, _, _ = await post(http, server.url + "/hooks/team/other", {"job_type": "x"})
    assert status == 404
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        async with http.request(method, trigger.url) as response:
            assert response.status == 405, method
            assert response.headers["Allow"] == "POST"
    async with http.get(server.url + "/nothing/here") as response:
        assert response.status == 404
    assert "aiohttp" not in response.headers.get("Server", "").lower()
    status, _, _ = await post(http, trigger.url + "/", {"job_type": "x"})
    assert status == 202


async def test_non_json_content_type_is_415(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger = await serve(server, jobs)
    for headers in (
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {},
    ):
        status, _, _ = await post(http, trigger.url, b'{"job_type": "x"}', headers)
        assert status == 415, headers
    status, _, _ = await post(
        http, trigger.url, b'{"job_type": "x"}', {"Content-Type": "application/vnd.api+json; charset=utf-8"}
    )
    assert status == 202


async def test_declared_body_over_limit_is_413(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger = await serve(server, jobs, max_body_bytes=100)
    body = json.dumps({"job_type": "x", "payload": {"blob": "a" * 200}}).encode()
    status, body_json, _ = await post(http, trigger.url, body)
    assert status == 413
    assert "100" in body_json["error"]
    status, _, _ = await post(http, trigger.url, {"job_type": "x"})
    assert status == 202


async def test_chunked_body_over_limit_is_refused_while_streaming(
    server: WebhookServer, jobs: InMemoryJobCreator
) -> None:
    """The 413 arrives while the client is still sending: the body is never read to its end."""
    await serve(server, jobs, max_body_bytes=1000)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            b"POST /hooks/team/hook HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 600
        for _ in range(2):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        assert status_line.split()[1] == b"413"
    finally:
        writer.close()
    assert not jobs.jobs


@pytest.mark.looptime
async def test_body_not_arriving_in_time_is_408(server: WebhookServer, jobs: InMemoryJobCreator) -> None:
    """A sender that declares a body and trickles it (or stops) is cut off at the response timeout."""
    await serve(server, jobs, response_timeout_seconds=2)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        writer.write(
            b"POST /hooks/team/hook HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"job_type": '
        )
        await writer.drain()
        status_line = await reader.readline()
    finally:
        writer.close()
    assert status_line.split()[1] == b"408"
    assert loop.time() - started == pytest.approx(2, abs=0.1)
    assert not jobs.jobs


async def test_malformed_json_is_400(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger = await serve(server, jobs)
    deep = b'{"job_type": "x", "payload": {"a": ' + b"[" * 70 + b"]" * 70 + b"}}"
    deeper = b'{"job_type": "x", "payload": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    for raw, rule, path in (
        (b"{", "json-syntax", "$"),
        (b"", "json-syntax", "$"),
        (b"\xff\xfe", "unicode", "$"),
        (b'{"job_type": NaN}', "finite-number", "$.job_type"),
        (b'{"job_type": "x", "payload": {"a": Infinity}}', "finite-number", "$.payload.a"),
        (b'{"job_type": "x", "payload": {"a": 1e400}}', "finite-number", "$.payload.a"),
        (b'{"job_type": "x", "payload": {"a": 18446744073709551616}}', "number-range", "$.payload.a"),
        (b'{"job_type": "x", "payload": {"a b": "\\ud800"}}', "unicode", '$.payload["a b"]'),
        (b'{"job_type": "x", "payload": {"\\uDFFF": 1}}', "unicode", "$.payload"),
        (deep, "json-depth", "$.payload.a" + "[0]" * 63),
        (deeper, "json-depth", "$"),
    ):
        status, body, _ = await post(http, trigger.url, raw)
        assert status == 400, raw
        assert (body["rule"], body["path"]) == (rule, path), raw
        assert f"(rule {rule})" in body["error"]
    status, body, _ = await post(http, trigger.url, b"[1, 2]")
    assert status == 400
    status, body, _ = await post(
        http, trigger.url, b'{"job_type": "x", "payload": {"smile": "\\ud83d\\ude00"}}'
    )
    assert status == 202
    assert jobs.jobs.pop(body["job_id"]).payload == {"smile": "\U0001f600"}
    status, body, _ = await post(http, trigger.url, {"payload": {}})
    assert status == 400
    assert "job_type" in body["error"]
    status, body, _ = await post(http, trigger.url, {"job_type": "x", "priority": 10**6})
    assert status == 400
    assert "priority" in body["error"]
    status, body, _ = await post(http, trigger.url, {"job_type": "x", "surprise": 1})
    assert status == 400
    assert "surprise" in body["error"]
    assert not jobs.jobs


async def test_payload_schema_failure_is_400_naming_the_path(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    schema = {
        "type": "object",
        "required": ["order"],
        "properties": {
            "order": {
                "type": "object",
                "properties": {"items": {"type": "array", "items": {"type": "integer"}}},
            }
        },
    }
    trigger = await serve(server, jobs, payload_schema=schema)
    status, body, _ = await post(
        http, trigger.url, {"job_type": "x", "payload": {"order": {"items": [1, "two"]}}}
    )
    assert status == 400
    assert body["path"] == "$.payload.order.items[1]"
    assert "$.payload.order.items[1]" in body["error"]
    status, body, _ = await post(http, trigger.url, {"job_type": "x", "payload": {}})
    assert status == 400
    assert body["path"] == "$.payload"
    assert "order" in body["error"]
    assert not jobs.jobs
    status, _, _ = await post(http, trigger.url, {"job_type": "x", "payload": {"order": {"items": [1, 2]}}})
    assert status == 202


async def test_payload_mode_schema_path_is_relative_to_the_body(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger = await serve(
        server,
        jobs,
        mode="payload",
        template=JobTemplate(type="ci.build"),
        payload_schema={"type": "object", "properties": {"ref": {"type": "string"}}},
    )
    status, body, _ = await post(http, trigger.url, {"ref": 7})
    assert (status, body["path"]) == (400, "$.ref")
    status, body, _ = await post(http, trigger.url, b'"just a string"')
    assert status == 400
    assert "object" in body["error"]


async def test_bearer_auth_401_never_says_which_part_failed(
    server: WebhookServer,
    jobs: InMemoryJobCreator,
    secrets: StaticSecrets,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = WebhookAuthSpec(type="bearer", secret_ref=SecretRef(name="hook", key="secret"))
    trigger = await serve(server, jobs, auth=auth, secrets=secrets)
    body = {"job_type": "x", "payload": {"card": "4111111111111111"}}
    answers = []
    caplog.set_level(logging.INFO, logger="portico")
    for headers in (
        {},
        {"Authorization": SECRET},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic " + SECRET},
        {"Authorization": "Bearer " + SECRET + "x"},
    ):
        status, answer, _ = await post(
            http, trigger.url, body, {"Content-Type": "application/json", **headers}
        )
        answers.append((status, answer))
    assert all(answer == (401, {"error": "unauthorized"}) for answer in answers)
    status, _, _ = await post(
        http, trigger.url, body, {"Content-Type": "application/json", "Authorization": "Bearer " + SECRET}
    )
    assert status == 202
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "authentication failed" in logged
    assert SECRET not in logged
    assert "4111111111111111" not in logged


async def test_secret_rotation_takes_effect_without_restart(
    server: WebhookServer, jobs: InMemoryJobCreator, secrets: StaticSecrets, http: aiohttp.ClientSession
) -> None:
    trigger = await serve(server, jobs, auth=GITHUB_AUTH, secrets=secrets)
    body = json.dumps({"job_type": "x"}).encode()
    assert (await post(http, trigger.url, body, github_headers(body)))[0] == 202
    secrets.values[("hook", "secret")] = "rotated"
    assert (await post(http, trigger.url, body, github_headers(body)))[0] == 401
    assert (await post(http, trigger.url, body, github_headers(body, secret="rotated")))[0] == 202


async def test_missing_secret_fails_start_and_vanished_secret_is_503(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    empty = StaticSecrets(namespace="team")
    with pytest.raises(TriggerStartError) as info:
        await serve(server, jobs, auth=GITHUB_AUTH, secrets=empty)
    assert info.value.reason == "SecretNotFound"
    assert "hook" in str(info.value)
    assert server.owner_of("/hooks/team/hook") is None

    secrets = StaticSecrets({("hook", "secret"): SECRET})
    trigger = await serve(server, jobs, auth=GITHUB_AUTH, secrets=secrets)
    del secrets.values[("hook", "secret")]
    body = json.dumps({"job_type": "x"}).encode()
    status, answer, headers = await post(http, trigger.url, body, github_headers(body))
    assert status == 503
    assert "Retry-After" in headers
    assert SECRET not in json.dumps(answer)
    assert trigger.get_health().errors_count == 1


@pytest.mark.looptime
async def test_rate_limit_is_429_with_retry_after(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger = await serve(server, jobs, rate_limit=RateLimitSpec(requests_per_second=0.5, burst=2))
    assert (await post(http, trigger.url, {"job_type": "x"}))[0] == 202
    assert (await post(http, trigger.url, {"job_type": "x"}))[0] == 202
    status, _, headers = await post(http, trigger.url, {"job_type": "x"})
    assert status == 429
    assert headers["Retry-After"] == "2"
    await asyncio.sleep(1)
    assert (await post(http, trigger.url, {"job_type": "x"}))[0] == 429
    await asyncio.sleep(1)
    assert (await post(http, trigger.url, {"job_type": "x"}))[0] == 202
    assert len(jobs.jobs) == 3


@pytest.mark.looptime
async def test_queue_not_answering_in_time_is_503_and_the_attempt_is_cancelled(
    server: WebhookServer, http: aiohttp.ClientSession
) -> None:
    hanging = HangingJobCreator()
    events = RecordingEvents()
    trigger = await serve(server, hanging, response_timeout_seconds=4, events=events)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, body, headers = await post(
        http, trigger.url, {"job_type": "x"}, {"Content-Type": "application/json"}
    )
    assert status == 503
    assert loop.time() - started == pytest.approx(4, abs=0.1)
    assert int(headers["Retry-After"]) > 0
    assert "retry" in body["error"]
    assert (hanging.attempts, hanging.cancelled) == (1, 1)
    health = trigger.get_health()
    assert (health.jobs_created_count, health.errors_count) == (0, 1)
    assert "within 4s" in (health.last_error or "")
    assert [e[1] for e in events.events] == ["JobCreationFailed"]


async def test_retryable_failure_is_503_permanent_is_502_and_recovery_is_announced(
    server: WebhookServer, http: aiohttp.ClientSession
) -> None:
    events = RecordingEvents()
    flaky = FailingJobCreator(2, retryable=True)
    trigger = await serve(server, flaky, events=events)
    for _ in range(2):
        status, _, headers = await post(http, trigger.url, {"job_type": "x"})
        assert status == 503
        assert "Retry-After" in headers
    assert (await post(http, trigger.url, {"job_type": "x"}))[0] == 202
    assert [e[1] for e in events.events] == ["JobCreationFailed", "QueueRecovered"]

    for status, answer in ((401, 502), (400, 400), (413, 413)):
        rejecting = FailingJobCreator(1, retryable=False, status=status)
        rejected = await serve(server, rejecting, name=f"rejected-{status}")
        assert (await post(http, rejected.url, {"job_type": "x"}))[0] == answer
        assert not rejecting.jobs
    assert [e[1] for e in events.events] == ["JobCreationFailed", "QueueRecovered"]


# --- delivery ids -------------------------------------------------------------------------------------


async def test_delivery_id_becomes_the_idempotency_key(
    server: WebhookServer, jobs: InMemoryJobCreator, secrets: StaticSecrets, http: aiohttp.ClientSession
) -> None:
    trigger = await serve(
        server,
        jobs,
        mode="payload",
        template=JobTemplate(type="ci.build"),
        auth=GITHUB_AUTH,
        secrets=secrets,
        record_headers=["User-Agent"],
    )
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    headers = github_headers(
        body, **{"X-GitHub-Delivery": "72d3162e", "X-GitHub-Event": "push", "User-Agent": "GitHub-Hookshot/1"}
    )
    first = await post(http, trigger.url, body, headers)
    again = await post(http, trigger.url, body, headers)
    assert first[0] == again[0] == 202
    assert first[1]["job_id"] == again[1]["job_id"]
    assert len(jobs.jobs) == 1
    job = jobs.jobs[first[1]["job_id"]]
    assert job.idempotency_key == "uid-hook:72d3162e"
    assert job.metadata["webhook.deliveryId"] == "72d3162e"
    assert job.metadata["webhook.event"] == "push"
    assert job.metadata["webhook.header.user-agent"] == "GitHub-Hookshot/1"
    assert job.payload == {"ref": "refs/heads/main"}


async def test_idempotency_key_header_and_configured_delivery_header(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger = await serve(server, jobs, delivery_id_header="X-Gitlab-Event-UUID")
    one = await post(
        http, trigger.url, {"job_type": "x"}, {"Content-Type": "application/json", "Idempotency-Key": "k1"}
    )
    two = await post(
        http,
        trigger.url,
        {"job_type": "x"},
        {"Content-Type": "application/json", "X-Gitlab-Event-UUID": "k1"},
    )
    assert one[1]["job_id"] == two[1]["job_id"]
    assert jobs.jobs[one[1]["job_id"]].idempotency_key == "uid-hook:k1"
    status, _, _ = await post(
        http,
        trigger.url,
        {"job_type": "x"},
        {"Content-Type": "application/json", "Idempotency-Key": "k" * 201},
    )
    assert status == 400
    for bad in ("has space", "caf\u00e9"):
        status, body, _ = await post(
            http, trigger.url, {"job_type": "x"}, {"Content-Type": "application/json", "Idempotency-Key": bad}
        )
        assert status == 400
        assert "visible ASCII" in body["error"]


async def test_same_delivery_id_on_two_triggers_makes_two_jobs(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    a = await serve(server, jobs, name="a")
    b = await serve(server, jobs, name="b")
    headers = {"Content-Type": "application/json", "Idempotency-Key": "same"}
    ids = {(await post(http, t.url, {"job_type": "x"}, headers))[1]["job_id"] for t in (a, b)}
    assert len(ids) == 2


# --- payload mode and event headers ------------------------------------------------------------------


async def test_job_type_from_event_header(
    server: WebhookServer, jobs: InMemoryJobCreator, secrets: StaticSecrets, http: aiohttp.ClientSession
) -> None:
    trigger = await serve(
        server,
        jobs,
        mode="payload",
        template=JobTemplate(type="ci.default"),
        auth=GITHUB_AUTH,
        secrets=secrets,
        job_type_from_header={
            "header": "X-GitHub-Event",
            "mapping": {"push": "ci.build", "release": "ci.publish"},
        },
    )
    body = b'{"action": "published"}'
    status, answer, _ = await post(
        http, trigger.url, body, github_headers(body, **{"X-GitHub-Event": "release"})
    )
    assert status == 202
    assert jobs.jobs[answer["job_id"]].job_type == "ci.publish"
    status, answer, _ = await post(
        http, trigger.url, body, github_headers(body, **{"X-GitHub-Event": "issues"})
    )
    assert (status, answer["status"]) == (200, "ignored")
    status, answer, _ = await post(
        http, trigger.url, b"{}", github_headers(b"{}", **{"X-GitHub-Event": "ping"})
    )
    assert (status, answer) == (200, {"status": "pong"})
    assert len(jobs.jobs) == 1


async def test_unmapped_event_can_fall_back_to_the_template(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger = await serve(
        server,
        jobs,
        mode="payload",
        template=JobTemplate(type="ci.default"),
        job_type_from_header={"header": "X-Event", "mapping": {"push": "ci.build"}, "unmapped": "template"},
    )
    status, answer, _ = await post(
        http, trigger.url, {}, {"Content-Type": "application/json", "X-Event": "tag"}
    )
    assert status == 202
    assert jobs.jobs[answer["job_id"]].job_type == "ci.default"


async def test_payload_mode_allowed_job_types_limit_the_mapping(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    trigger = await serve(
        server,
        jobs,
        mode="payload",
        allowed_job_types=["ci.build"],
        job_type_from_header={"header": "X-Event", "mapping": {"push": "ci.build", "delete": "ci.purge"}},
    )
    push = await post(http, trigger.url, {}, {"Content-Type": "application/json", "X-Event": "push"})
    purge = await post(http, trigger.url, {}, {"Content-Type": "application/json", "X-Event": "delete"})
    assert (push[0], purge[0]) == (202, 403)


def test_payload_mode_needs_a_job_type_source(jobs: InMemoryJobCreator) -> None:
    with pytest.raises(ValueError, match="job template"):
        WebhookTrigger(jobs, WebhookConfig(mode="payload"))


# --- lifecycle, health, metrics ------------------------------------------------------------------------


async def test_stop_releases_the_path_and_lets_requests_in_flight_finish(
    server: WebhookServer, http: aiohttp.ClientSession
) -> None:
    entered, gate = asyncio.Event(), asyncio.Event()

    class SlowJobCreator(InMemoryJobCreator):
        async def create_job(self, job_type: str, payload: dict[str, Any], *args: Any, **kwargs: Any) -> Job:
            entered.set()
            await gate.wait()
            return await super().create_job(job_type, payload, *args, **kwargs)

    slow = SlowJobCreator()
    trigger = await serve(server, slow)
    in_flight = asyncio.create_task(post(http, trigger.url, {"job_type": "x"}))
    await entered.wait()
    stopping = asyncio.create_task(trigger.stop())
    await asyncio.sleep(0.05)
    assert server.owner_of(trigger.path) is None
    assert (await post(http, trigger.url, {"job_type": "x"}))[0] == 404
    gate.set()
    status, body, _ = await in_flight
    await stopping
    assert status == 202
    assert body["job_id"] in slow.jobs
    assert not trigger.is_running


async def test_health_and_metrics_count_requests_by_status(
    server: WebhookServer, jobs: InMemoryJobCreator, http: aiohttp.ClientSession
) -> None:
    events = RecordingEvents()
    trigger = await serve(server, jobs, events=events)
    for body in ({"job_type": "x"}, {"job_type": "x"}, b"{"):
        await post(http, trigger.url, body)
    await post(http, trigger.url, b"{}", {"Content-Type": "text/plain"})
    health = trigger.get_health()
    assert health.is_running
    assert health.jobs_created_count == 2
    assert health.source_status == {
        "webhookPath": "/hooks/team/hook",
        "webhookRequests": {"202": 2, "400": 1, "415": 1},
    }
    metrics = trigger.metrics()
    assert metrics.count == 4
    assert len(metrics.latency.counts) == len(LATENCY_BUCKETS) + 1
    assert sum(metrics.latency.counts) == 4
    assert metrics.latency.sum > 0
    assert events.changes >= 4

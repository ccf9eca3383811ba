"""The request pipeline without any server: (method, path, headers, body) in, (status, headers, body)
out, in the order the module docstring gives."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.domain.trigger import JobTemplate, SecretRef, TriggerRef
from portico.ports.job_trigger import TriggerStartError
from portico.sources.common.emitter import JobEmitter
from portico.sources.webhook.mapping import JobMapping, WebhookJobRequest
from portico.sources.webhook.messages import WebhookRefusal, WebhookRequest, WebhookResponse
from portico.sources.webhook.metrics import LATENCY_BUCKETS
from portico.sources.webhook.pipeline import WebhookPipeline
from portico.sources.webhook.spec import WebhookSpec
from tests.sources.conftest import RecordingEvents

TOKEN = "t0ken"
REF = TriggerRef(name="p", namespace="team", uid="uid-p")


def pipeline(
    jobs: InMemoryJobCreator, spec: dict[str, Any], template: JobTemplate | None = None
) -> WebhookPipeline:
    model = WebhookSpec.model_validate(spec)
    events = RecordingEvents()
    emitter = JobEmitter(jobs, ref=REF, source="webhook", template=template, events=events)
    endpoint = WebhookPipeline(
        model,
        JobMapping.of(model, template),
        emitter,
        events=events,
        secret=lambda: TOKEN,
        clock=lambda: 0.0,
        owner=str(REF),
        idempotency_scope=REF.key,
    )
    endpoint.accepting = True
    return endpoint


BEARER = {"auth": {"type": "bearer", "secretRef": {"name": "s", "key": "k"}}}
HEADERS = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}


def post(body: bytes | dict[str, Any], **headers: str) -> WebhookRequest:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    return WebhookRequest.of_bytes("POST", "/hooks/team/p", {**HEADERS, **headers}, raw)


def answer(response: WebhookResponse) -> tuple[int, Any]:
    return response.status, json.loads(response.body)


@pytest.fixture
def jobs() -> InMemoryJobCreator:
    return InMemoryJobCreator()


async def test_an_accepted_request_is_202_with_the_job_id(jobs: InMemoryJobCreator) -> None:
    endpoint = pipeline(jobs, {**BEARER, "allowedJobTypes": ["a.b"]})
    response = await endpoint.handle(
        post({"job_type": "a.b", "payload": {"n": 1}}, **{"Idempotency-Key": "d1"})
    )
    status, body = answer(response)
    assert status == 202
    job = jobs.jobs[body["job_id"]]
    assert (job.job_type, job.payload, job.idempotency_key) == ("a.b", {"n": 1}, "uid-p:d1")
    assert job.metadata["webhook.deliveryId"] == "d1"
    assert response.headers["Content-Type"] == "application/json"
    assert not response.close


async def test_header_names_are_case_blind(jobs: InMemoryJobCreator) -> None:
    endpoint = pipeline(jobs, {**BEARER, "allowedJobTypes": ["a.b"]})
    request = WebhookRequest.of_bytes(
        "POST",
        "/p",
        [("CONTENT-TYPE", "application/vnd.api+json; charset=utf-8"), ("Authorization", f"Bearer {TOKEN}")],
        b'{"job_type": "a.b"}',
    )
    assert (await endpoint.handle(request)).status == 202


async def test_a_closed_pipeline_answers_404(jobs: InMemoryJobCreator) -> None:
    endpoint = pipeline(jobs, BEARER)
    endpoint.accepting = False
    assert answer(await endpoint.handle(post({"job_type": "a.b"}))) == (
        404,
        {"error": "no webhook at this path"},
    )


async def test_a_request_admitted_before_a_stop_is_answered_not_refused(jobs: InMemoryJobCreator) -> None:
    """A reconfiguration's successor takes the path, then its predecessor stops. A request the server
    had already routed to the predecessor is admitted in that same step, so the stop drains it: it
    gets its 202, not a 404 for a path that was never gone."""
    endpoint = pipeline(jobs, BEARER)
    answering = asyncio.create_task(endpoint.handle(post({"job_type": "a.b"})))
    await asyncio.sleep(0)  # routed and admitted, not yet answered
    endpoint.accepting = False
    await endpoint.inflight.drain(5, cancel_wait_seconds=1)
    assert answer(await answering)[0] == 202 and len(jobs.jobs) == 1


async def test_a_bearer_token_is_checked_before_the_body_is_read(jobs: InMemoryJobCreator) -> None:
    endpoint = pipeline(jobs, BEARER)

    async def never(limit: int) -> bytes | None:
        raise AssertionError("the body was read")

    request = WebhookRequest("POST", "/p", {"Content-Type": "application/json"}, never)
    assert answer(await endpoint.handle(request)) == (401, {"error": "unauthorized"})


@pytest.mark.parametrize(
    ("body", "headers", "status", "close"),
    [
        (b'{"job_type": "a.b"}', {"content-type": "text/plain"}, 415, False),
        (b'{"job_type": "a.b", "payload": {"pad": "' + b"x" * 200 + b'"}}', {}, 413, True),
        (b"[1, 2", {}, 400, False),
        (b'{"job_type": "a.b", "extra": 1}', {}, 400, False),
        (b'{"job_type": "c.d"}', {}, 403, False),
        (b'{"job_type": "a.b"}', {"Idempotency-Key": "two words"}, 400, False),
    ],
)
async def test_refusals(
    jobs: InMemoryJobCreator, body: bytes, headers: dict[str, str], status: int, close: bool
) -> None:
    endpoint = pipeline(jobs, {**BEARER, "allowedJobTypes": ["a.b"], "maxBodyBytes": 100})
    response = await endpoint.handle(post(body, **headers))
    assert (response.status, response.close) == (status, close)
    assert "error" in json.loads(response.body)
    assert not jobs.jobs


async def test_payload_schema_mismatch_names_the_path(jobs: InMemoryJobCreator) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    endpoint = pipeline(jobs, {**BEARER, "allowedJobTypes": ["a.b"], "payloadSchema": schema})
    status, body = answer(await endpoint.handle(post({"job_type": "a.b", "payload": {"n": "one"}})))
    assert (status, body["path"]) == (400, "$.payload.n")


async def test_a_vanished_secret_is_503_with_retry_after(jobs: InMemoryJobCreator) -> None:
    endpoint = pipeline(jobs, BEARER)

    def gone() -> str:
        raise TriggerStartError("Secret 's' key 'k': not found")

    endpoint._secret = gone
    response = await endpoint.handle(post({"job_type": "a.b"}))
    assert (response.status, response.headers["Retry-After"]) == (503, "10")


async def test_payload_mode_takes_the_whole_body_and_the_template_type(jobs: InMemoryJobCreator) -> None:
    endpoint = pipeline(
        jobs,
        {"auth": {"type": "none"}, "mode": "payload", "recordHeaders": ["User-Agent"]},
        JobTemplate(type="ci.build", queue="builds"),
    )
    status, body = answer(await endpoint.handle(post({"ref": "main"}, **{"User-Agent": "hook/1"})))
    job = jobs.jobs[body["job_id"]]
    assert (status, job.job_type, job.queue_name, job.payload) == (202, "ci.build", "builds", {"ref": "main"})
    assert job.metadata["webhook.header.user-agent"] == "hook/1"
    assert answer(await endpoint.handle(post(b"[1]")))[0] == 400


async def test_create_requested_without_http(jobs: InMemoryJobCreator) -> None:
    endpoint = pipeline(jobs, {"auth": {"type": "none"}}, JobTemplate(type="a.b", priority=2))
    job = await endpoint.create_requested(WebhookJobRequest(job_type="a.b"))
    assert (job.job_type, job.priority, job.idempotency_key) == ("a.b", 2, None)
    with pytest.raises(WebhookRefusal) as refused:
        await endpoint.create_requested(WebhookJobRequest(job_type="x.y"))
    assert refused.value.status == 403


class Refused(Exception):
    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


async def test_an_endpoint_hook_answers_with_what_it_returns_or_raises(jobs: InMemoryJobCreator) -> None:
    endpoint = pipeline(jobs, {"auth": {"type": "none"}})

    async def hook(request: WebhookJobRequest) -> object:
        if request.job_type == "slow.down":
            raise Refused(429, "Rate limit exceeded for slow.down")
        if request.job_type == "own.answer":
            return {"queued": True}
        return None

    endpoint.endpoint = hook
    assert answer(await endpoint.handle(post({"job_type": "slow.down"}))) == (
        429,
        {"error": "Rate limit exceeded for slow.down"},
    )
    assert answer(await endpoint.handle(post({"job_type": "own.answer"}))) == (202, {"queued": True})
    assert answer(await endpoint.handle(post({"job_type": "any.thing"}))) == (202, {"status": "accepted"})


async def test_metrics_count_by_status_on_one_histogram(jobs: InMemoryJobCreator) -> None:
    endpoint = pipeline(jobs, {**BEARER, "allowedJobTypes": ["a.b"]})
    for job_type in ("a.b", "a.b", "c.d"):
        await endpoint.handle(post({"job_type": job_type}))
    metrics = endpoint.metrics.snapshot()
    assert metrics.by_status == {202: 2, 403: 1}
    assert metrics.count == metrics.latency.count == 3
    assert len(metrics.latency.counts) == len(LATENCY_BUCKETS) + 1
    assert metrics.latency.cumulative()[-1] == (float("inf"), 3)
    endpoint.metrics.observe(202, 0.2)
    assert metrics.count == 3


def test_payload_mode_needs_a_job_type_source() -> None:
    spec = WebhookSpec.model_validate({"auth": {"type": "none"}, "mode": "payload"})
    with pytest.raises(ValueError, match="payload mode needs a job template"):
        JobMapping.of(spec, None)
    assert JobMapping.of(spec, JobTemplate(type="t")).allowed_job_types() is None


def test_a_secret_ref_is_required_by_the_spec_not_by_the_pipeline() -> None:
    assert SecretRef(name="s", key="k") == WebhookSpec.model_validate(BEARER).auth.secret_ref


async def test_an_endpoint_hook_creates_its_job_in_the_requests_job_context(jobs: InMemoryJobCreator) -> None:
    """An override that calls the job creator itself still gets the delivery id as idempotency key and
    the provenance metadata, so the sender's retry finds the job instead of making a second one."""
    endpoint = pipeline(jobs, {"auth": {"type": "none"}}, JobTemplate(type="a.b", metadata={"team": "x"}))

    async def hook(request: WebhookJobRequest) -> object:
        return await jobs.create_job(request.job_type, request.payload, priority=9)

    endpoint.endpoint = hook
    first = answer(await endpoint.handle(post({"job_type": "a.b"}, **{"Idempotency-Key": "d-7"})))
    again = answer(await endpoint.handle(post({"job_type": "a.b"}, **{"Idempotency-Key": "d-7"})))
    assert first[0] == again[0] == 202
    assert first[1] == again[1]
    [job] = jobs.jobs.values()
    assert (job.idempotency_key, job.priority) == ("uid-p:d-7", 9)
    assert job.metadata["team"] == "x"
    assert job.metadata["trigger.source"] == "webhook"
    assert job.metadata["webhook.deliveryId"] == "d-7"

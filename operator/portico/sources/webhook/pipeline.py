"""The webhook request pipeline, free of any HTTP framework: (method, path, headers, body) in, (status,
headers, body) out. The operator's aiohttp server and the ASGI router are thin adapters over it, so
both answer every request byte for byte alike.

One request goes: rate limit (429) -> JSON content type (415) -> a bearer token before the body is
read (401) -> the body, capped while it arrives (413, 408) -> a signature over the body (401) -> JSON
under the input policy (400) -> the job it asks for (400, 403) -> `payloadSchema` (400) -> the queue
service. The answer is 202 `{"job_id": ...}` only once the queue service has accepted the job, and 503
with `Retry-After` when it cannot within `responseTimeoutSeconds`, so a sender retries instead of losing
the event; the sender's delivery id becomes the idempotency key, so the retry never makes a second
job. Nothing a request can send produces a 500.
"""

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError

from portico.domain.input_policy import ENVELOPE_DEPTH, MAX_DEPTH, RULE_DEPTH, PolicyViolation, parse_json
from portico.ports.job_creator import Job, JobCreationError, job_context
from portico.ports.job_trigger import TriggerStartError
from portico.ports.trigger_events import TriggerEvents
from portico.sources.common.drain import InFlight
from portico.sources.common.emitter import JobEmitter
from portico.sources.common.rate_limit import TokenBucket
from portico.sources.webhook.mapping import BadDeliveryId, JobMapping, WebhookJobRequest, validation_message
from portico.sources.webhook.messages import (
    UndecodableBody,
    WebhookRefusal,
    WebhookRequest,
    WebhookResponse,
    client_gone,
    is_json,
    json_answer,
)
from portico.sources.webhook.metrics import RequestMetrics
from portico.sources.webhook.payload_schema import TooDeepForSchema, first_mismatch
from portico.sources.webhook.spec import WebhookSpec

logger = logging.getLogger(__name__)

UNAVAILABLE_RETRY_AFTER_SECONDS = 10
MAX_DETAIL_LENGTH = 300


def _unavailable(reason: str, **extra: object) -> WebhookRefusal:
    refusal = WebhookRefusal(
        503,
        "the job could not be accepted now; retry later",
        reason=reason,
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
    )
    refusal.extra.update(extra)
    return refusal


def _parse_json(body: bytes, max_depth: int) -> object:
    """The body under the input policy (`portico.domain.input_policy`): a refusal names the rule and
    the JSON path, before anything reaches the queue service."""
    try:
        return parse_json(body, max_depth=max_depth)
    except PolicyViolation as exc:
        raise WebhookRefusal(400, str(exc), rule=exc.rule, json_path=exc.path) from None


_NO_HEADERS: Mapping[str, str] = CIMultiDictProxy(CIMultiDict())
REQUEST_HEADERS: ContextVar[Mapping[str, str]] = ContextVar("webhook_request_headers", default=_NO_HEADERS)
"""The headers of the request an `endpoint` hook is answering, for `create_requested` (delivery id)."""
Endpoint = Callable[[WebhookJobRequest], Awaitable[object]]


def _accepted(result: object) -> dict[str, object]:
    """The 202 body for what an endpoint hook returned: a job, an answer of its own, or nothing."""
    if isinstance(result, Job):
        return {"job_id": str(result.id)}
    if isinstance(result, dict):
        return result
    return {"status": "accepted"}


class WebhookPipeline:
    """Answers the requests of one endpoint. The trigger opens it when it starts and closes it when it
    stops; requests to a closed pipeline are answered 404, as if the path were gone."""

    def __init__(
        self,
        spec: WebhookSpec,
        mapping: JobMapping,
        emitter: JobEmitter,
        *,
        events: TriggerEvents,
        secret: Callable[[], str],
        clock: Callable[[], float],
        owner: str,
        idempotency_scope: str,
    ) -> None:
        self.spec = spec
        self.metrics = RequestMetrics()
        self.inflight = InFlight()
        """Each request is answered in a task of its own, so that `stop()` can drain them."""
        self.accepting = False
        self.endpoint: Endpoint | None = None
        """A request-mode hook in place of `create_requested`: a trigger subclass's own
        `_create_job_endpoint`, as the seed's FAQ writes them. It runs inside the request's job context
        (the delivery id as idempotency key, provenance metadata), so even a job it creates by calling
        the job creator itself is safe to retry and traceable."""
        self._mapping = mapping
        self._emitter = emitter
        self._events = events
        self._secret = secret
        self._clock = clock
        self._owner = owner
        self._scope = idempotency_scope
        self._verifier = spec.auth.verifier()
        self._schema = spec.payload_validator
        limit = spec.rate_limit
        self._bucket = TokenBucket(limit.requests_per_second, limit.effective_burst) if limit else None
        self._allowed = mapping.allowed_job_types()
        self._queue_failing = False

    async def handle(self, request: WebhookRequest) -> WebhookResponse:
        """Answer one POST routed to this endpoint."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.spec.response_timeout_seconds
        try:
            if not self.accepting:
                raise WebhookRefusal(404, "no webhook at this path", reason="trigger stopping")
            # Admitted in the same step as the route lookup: a request routed here is tracked before a
            # stop can begin, so a stop drains it rather than refusing it (a reconfiguration's successor
            # already holds the path for everything that comes after).
            response: WebhookResponse = await self.inflight.start(self._answer(request, deadline=deadline))
        except WebhookRefusal as refusal:
            response = self._refuse(request, refusal)
        except ConnectionError:
            response = client_gone()
        self.metrics.observe(response.status, loop.time() - started)
        self._events.changed()
        return response

    async def create_requested(
        self, job_request: WebhookJobRequest, headers: Mapping[str, str] = _NO_HEADERS
    ) -> Job:
        """The job a request-mode body asks for, checked against `payloadSchema` and the allowed job
        types. Raises WebhookRefusal."""
        self._check_schema(job_request.payload, "$.payload")
        if self._allowed is not None and job_request.job_type not in self._allowed:
            raise WebhookRefusal(
                403,
                f"job type {job_request.job_type[:100]!r} is not allowed here",
                reason="job type not allowed",
                job_type=job_request.job_type[:100],
            )
        delivery_id = self._delivery_id(headers, None)
        return await self._create(
            job_type=job_request.job_type,
            payload=job_request.payload,
            queue_name=job_request.queue_name,
            priority=job_request.priority,
            metadata=self._mapping.metadata(headers, delivery_id, event=None),
            delivery_id=delivery_id,
        )

    def _refuse(self, request: WebhookRequest, refusal: WebhookRefusal) -> WebhookResponse:
        log = logger.warning if refusal.status >= 500 else logger.info
        log(
            "%s: webhook request refused with %d: %s",
            self._owner,
            refusal.status,
            refusal.reason,
            extra={
                "trigger": self._owner,
                "path": request.path,
                "status": refusal.status,
                "reason": refusal.reason,
                "remote": request.remote,
                **refusal.extra,
            },
        )
        body: dict[str, object] = {"error": refusal.message}
        if "schema_path" in refusal.extra:
            body["path"] = refusal.extra["schema_path"]
        if "rule" in refusal.extra:
            body["rule"] = refusal.extra["rule"]
            body["path"] = refusal.extra["json_path"]
        answer = json_answer(refusal.status, body, refusal.headers)
        if refusal.close:
            return WebhookResponse(answer.status, answer.body, answer.headers, close=True)
        return answer

    async def _answer(self, request: WebhookRequest, *, deadline: float) -> WebhookResponse:
        """The answer is due `responseTimeoutSeconds` after the request arrived: a body still arriving
        then is answered 408, a job the queue service has not accepted by then 503."""
        self._check_rate()
        headers = request.headers
        if not is_json(headers):
            raise WebhookRefusal(415, "the body must be JSON (Content-Type: application/json)")
        if not self._verifier.needs_body:
            self._authenticate(headers, b"")
        limit = self.spec.max_body_bytes
        receiving = True
        try:
            async with asyncio.timeout_at(deadline):
                try:
                    body = await request.read_body(limit)
                except UndecodableBody as exc:
                    raise WebhookRefusal(exc.status, str(exc), close=True) from None
                receiving = False
                if body is None:
                    raise WebhookRefusal(413, f"the body exceeds {limit} bytes", close=True)
                if self._verifier.needs_body:
                    self._authenticate(headers, body)
                if self.spec.mode == "request":
                    return await self._from_request(headers, _parse_json(body, ENVELOPE_DEPTH))
                return await self._from_payload(headers, _parse_json(body, MAX_DEPTH))
        except TimeoutError:
            if receiving:
                raise WebhookRefusal(408, "the body was not received in time", close=True) from None
            self._emitter.record_error(
                f"queue service did not accept the job within {self.spec.response_timeout_seconds:g}s"
            )
            self._queue_trouble("the queue service did not answer in time")
            raise _unavailable("job creation timed out") from None

    def _check_rate(self) -> None:
        if self._bucket is None:
            return
        wait = self._bucket.try_take()
        if wait > 0:
            raise WebhookRefusal(
                429, "too many requests", headers={"Retry-After": str(max(1, math.ceil(wait)))}
            )

    def _authenticate(self, headers: Mapping[str, str], body: bytes) -> None:
        try:
            secret = self._secret() if self._verifier.needs_secret else ""
        except TriggerStartError as exc:
            self._emitter.record_error(f"webhook secret unavailable: {exc}")
            raise WebhookRefusal(
                503,
                "the endpoint is not available",
                reason=f"secret unavailable: {exc}",
                headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
            ) from None
        verdict = self._verifier.verify(headers, body, secret, self._clock())
        if not verdict.ok:
            raise WebhookRefusal(401, "unauthorized", reason=f"authentication failed: {verdict.reason}")

    def _check_schema(self, payload: object, where: str) -> None:
        if self._schema is None:
            return
        try:
            mismatch = first_mismatch(self._schema, payload, where)
        except TooDeepForSchema:
            raise WebhookRefusal(
                400,
                f"payload is nested too deeply for payloadSchema (rule {RULE_DEPTH})",
                rule=RULE_DEPTH,
                json_path=where,
            ) from None
        if mismatch is None:
            return
        raise WebhookRefusal(
            400,
            f"payload does not match payloadSchema at {mismatch.path}: {str(mismatch)[:MAX_DETAIL_LENGTH]}",
            reason=f"payload does not match payloadSchema at {mismatch.path}",
            schema_path=mismatch.path,
        )

    def _delivery_id(self, headers: Mapping[str, str], document: dict[str, Any] | None) -> str | None:
        try:
            return self._mapping.delivery_id(headers, document)
        except BadDeliveryId as exc:
            raise WebhookRefusal(400, str(exc)) from None

    async def _from_request(self, headers: Mapping[str, str], document: object) -> WebhookResponse:
        try:
            job_request = WebhookJobRequest.model_validate(document)
        except ValidationError as exc:
            raise WebhookRefusal(400, f"invalid job request: {validation_message(exc)}") from None
        if self.endpoint is None:
            job = await self.create_requested(job_request, headers)
            return json_answer(202, {"job_id": str(job.id)})
        delivery_id = self._delivery_id(headers, None)
        template = self._mapping.template
        metadata = {
            **(template.metadata if template else {}),
            **self._emitter.provenance(),
            **self._mapping.metadata(headers, delivery_id, event=None),
        }
        token = REQUEST_HEADERS.set(headers)
        try:
            with job_context(idempotency_key=self._idempotency_key(delivery_id), metadata=metadata):
                result = await self.endpoint(job_request)
        except WebhookRefusal:
            raise
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            if not isinstance(status, int) or not 400 <= status <= 599:
                raise
            detail = getattr(exc, "detail", None) or str(exc)
            reason = f"refused by the endpoint: {detail}"
            raise WebhookRefusal(status, str(detail)[:MAX_DETAIL_LENGTH], reason=reason) from None
        finally:
            REQUEST_HEADERS.reset(token)
        return json_answer(202, _accepted(result))

    async def _from_payload(self, headers: Mapping[str, str], document: object) -> WebhookResponse:
        if not isinstance(document, dict):
            raise WebhookRefusal(400, "the body must be a JSON object")
        event = self._mapping.event_type(headers, document)
        preset = self.spec.auth.preset
        if preset == "slack" and document.get("type") == "url_verification":
            challenge = document.get("challenge")
            if isinstance(challenge, str):
                return json_answer(200, {"challenge": challenge})
        job_type = self._mapping.job_type_for(headers)
        if job_type is None:
            if preset == "github" and event == "ping":
                return json_answer(200, {"status": "pong"})
            return json_answer(200, {"status": "ignored", "reason": "no job type for this event"})
        self._check_schema(document, "$")
        if self._allowed is not None and job_type not in self._allowed:
            raise WebhookRefusal(
                403, f"job type {job_type!r} is not allowed here", reason="job type not allowed"
            )
        delivery_id = self._delivery_id(headers, document)
        job = await self._create(
            job_type=job_type,
            payload=document,
            queue_name=None,
            priority=None,
            metadata=self._mapping.metadata(headers, delivery_id, event=event),
            delivery_id=delivery_id,
        )
        return json_answer(202, {"job_id": str(job.id)})

    async def _create(
        self,
        *,
        job_type: str,
        payload: dict[str, Any],
        queue_name: str | None,
        priority: int | None,
        metadata: dict[str, str],
        delivery_id: str | None,
    ) -> Job:
        """Create the job; `_answer`'s deadline cancels the attempt when the queue service is too slow.

        A cancelled attempt may still have reached the queue service; the idempotency key derived from
        the delivery id makes the sender's retry find that job instead of creating a second one.
        """
        idempotency_key = self._idempotency_key(delivery_id)
        try:
            job = await self._emitter.emit(
                job_type=job_type,
                payload=payload,
                queue_name=queue_name,
                priority=priority,
                metadata=metadata,
                idempotency_key=idempotency_key,
            )
        except JobCreationError as exc:
            if exc.status in (400, 413, 415, 422) and not exc.retryable:
                too_large = exc.status == 413
                raise WebhookRefusal(
                    413 if too_large else 400,
                    "the job is larger than the queue service accepts"
                    if too_large
                    else "the queue service refused the job as invalid",
                    reason=f"job creation rejected: {exc}",
                    delivery_id=delivery_id,
                ) from None
            self._queue_trouble(str(exc))
            if exc.retryable:
                raise _unavailable(f"job creation failed: {exc}", delivery_id=delivery_id) from None
            raise WebhookRefusal(
                502,
                "the queue service rejected the job",
                reason=f"job creation rejected: {exc}",
                delivery_id=delivery_id,
            ) from None
        if self._queue_failing:
            self._queue_failing = False
            self._events.event("Normal", "QueueRecovered", "webhook deliveries are accepted again")
        return job

    def _idempotency_key(self, delivery_id: str | None) -> str | None:
        return f"{self._scope}:{delivery_id}" if delivery_id is not None else None

    def _queue_trouble(self, detail: str) -> None:
        """One Warning event per outage, not one per request."""
        if not self._queue_failing:
            self._queue_failing = True
            self._events.event(
                "Warning", "JobCreationFailed", f"webhook deliveries are refused with 503: {detail}"
            )

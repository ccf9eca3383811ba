"""The webhook source: an HTTP endpoint per trigger that is safe to expose to the internet.

A POST to the trigger's path becomes a job. The endpoint answers 202 `{"job_id": ...}` only once the
queue service has accepted the job, and 503 with `Retry-After` when it cannot within the response
timeout, so a sender retries instead of losing the event; the sender's delivery id becomes the job's
idempotency key, so its retry never makes a second job. Everything a request can get wrong has its own
status code (see docs/webhook.md), and nothing a request can send produces a 500.

Two body modes: `request` takes the `WebhookJobRequest` body (job type chosen by the caller, limited to
`allowedJobTypes`); `payload` takes any JSON object as the job's payload (GitHub, Stripe, Slack), the
job type coming from the template or from an event header.

Library use: `await WebhookTrigger(job_creator=..., config=WebhookConfig(prefix="/webhooks")).start()`
serves the endpoint on its own server at `config.host:config.port`; pass `server=WebhookServer(...)` to
put several triggers on one port. In the operator, `WebhookSource` owns one shared server.
"""

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import jsonschema
import referencing
import referencing.exceptions
from aiohttp import web
from jsonschema import exceptions as jsonschema_errors
from jsonschema.protocols import Validator
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from referencing.jsonschema import DRAFT202012

from portico.domain.input_policy import (
    ENVELOPE_DEPTH,
    MAX_DEPTH,
    RULE_DEPTH,
    PolicyViolation,
    check_identifier,
    parse_json,
)
from portico.domain.model import SpecModel
from portico.domain.trigger import PRIORITY_MAX, PRIORITY_MIN, JobTemplate, SecretRef, TriggerRef
from portico.http_guard import ServerLimits
from portico.ports.job_creator import JobCreationError, JobCreator
from portico.ports.job_trigger import JobTrigger, TriggerHealth, TriggerStartError
from portico.ports.trigger_events import LoggingTriggerEvents, TriggerEvents
from portico.ports.trigger_source import SecretResolver, TriggerContext, TriggerSource
from portico.sources.common.emitter import JobEmitter
from portico.sources.webhook.auth import (
    DEFAULT_TOLERANCE_SECONDS,
    Algorithm,
    Preset,
    RequestVerifier,
    build_verifier,
)
from portico.sources.webhook.server import (
    PathInUseError,
    RequestMetrics,
    TokenBucket,
    UndecodableBody,
    WebhookServer,
    client_gone,
    json_response,
    normalize_path,
    read_body_capped,
)

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = MIB
MAX_BODY_BYTES_LIMIT = 10 * MIB
DEFAULT_RESPONSE_TIMEOUT_SECONDS = 5.0
MAX_RESPONSE_TIMEOUT_SECONDS = 9.0
"""GitHub gives up on a delivery after 10 s; the endpoint must have answered (503 at worst) before."""
UNAVAILABLE_RETRY_AFTER_SECONDS = 10
MAX_DELIVERY_ID_LENGTH = 200
MAX_METADATA_VALUE_LENGTH = 1024
MAX_DETAIL_LENGTH = 300
STOP_GRACE_SECONDS = 1.0

PATH_PATTERN = r"^(/[A-Za-z0-9._~-]+)+$"
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"

Mode = Literal["request", "payload"]
JobTypeName = Annotated[str, Field(min_length=1, max_length=253)]
HeaderName = Annotated[str, Field(min_length=1, max_length=128, pattern=HEADER_NAME_PATTERN)]


_NOT_SCHEMAS = frozenset({"const", "enum", "default", "examples"})
"""Keywords whose values are data, not subschemas: a `$ref` key inside them is not a reference."""


def _references(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                yield value
            elif key not in _NOT_SCHEMAS:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def compile_payload_schema(schema: Mapping[str, Any]) -> Validator:
    """A validator for `payloadSchema` (JSON Schema, draft 2020-12 unless `$schema` says otherwise).

    Used both when a spec is validated and when the trigger starts, so "valid" and "runs" agree.
    References must stay inside the schema and resolve: remote schemas are never fetched, and a
    dangling reference would otherwise only fail when a request reaches it.
    Raises ValueError naming what is wrong with the schema.
    """
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema_errors.SchemaError as exc:
        raise ValueError(
            f"payloadSchema is not a valid JSON Schema: {exc.message} (at {exc.json_path})"
        ) from None
    resource = referencing.Resource.from_contents(dict(schema), default_specification=DRAFT202012)
    resolver = referencing.Registry().with_resource("", resource).resolver(base_uri="")
    for reference in _references(schema):
        if not reference.startswith("#"):
            raise ValueError(f"payloadSchema may only refer to its own parts (#...), not {reference!r}")
        try:
            resolver.lookup(reference)
        except referencing.exceptions.Unresolvable:
            raise ValueError(f"payloadSchema reference {reference!r} points to nothing") from None
    validator: Validator = cls(schema)
    return validator


class RateLimitSpec(SpecModel):
    """A token bucket per trigger: requests over the limit are answered 429 with Retry-After."""

    requests_per_second: float = Field(
        gt=0, le=100_000, description="Sustained number of requests per second the endpoint accepts."
    )
    burst: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Requests accepted at once after a quiet period. Default: requestsPerSecond rounded up.",
    )

    @property
    def effective_burst(self) -> int:
        return self.burst if self.burst is not None else max(1, math.ceil(self.requests_per_second))


class JobTypeFromHeaderSpec(SpecModel):
    """Payload mode: choose the job type from an event header (e.g. `X-GitHub-Event: push` -> `ci.build`)."""

    header: str = Field(
        min_length=1,
        max_length=128,
        pattern=HEADER_NAME_PATTERN,
        description="The request header that names the event.",
    )
    mapping: dict[str, JobTypeName] = Field(
        min_length=1,
        max_length=200,
        description="Job type for each header value, e.g. {push: ci.build, release: ci.publish}.",
    )
    unmapped: Literal["ignore", "template"] = Field(
        default="ignore",
        description="For a header value not in the mapping: ignore the request (answered 200, no job) or "
        "create a job of the template's type (spec.job.type).",
    )


class WebhookAuthSpec(SpecModel):
    """How a request proves it comes from the sender. Every failure is answered 401 without saying why."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.preset) || self.type == 'hmac'",
                    "message": "preset applies to type hmac only",
                },
                {
                    "rule": "self.type != 'hmac' || has(self.preset) || has(self.header)",
                    "message": "hmac without a preset needs the signature header",
                },
                {
                    "rule": "!has(self.preset) || (!has(self.header) && !has(self.prefix))",
                    "message": "header and prefix are fixed by the preset",
                },
                {
                    "rule": "!has(self.preset) || self.algorithm == 'sha256'"
                    " || (self.preset == 'github' && self.algorithm == 'sha1')",
                    "message": "Stripe and Slack sign with sha256; GitHub with sha256 or sha1",
                },
            ]
        }
    )

    type: Literal["none", "bearer", "hmac"] = Field(
        description="none: no authentication (say so explicitly); bearer: a shared token in a header; "
        "hmac: a signature of the body computed with a shared secret."
    )
    preset: Preset | None = Field(
        default=None,
        description="For hmac: follow a sender's documented scheme: github (X-Hub-Signature-256), "
        "stripe (Stripe-Signature with timestamp) or slack (X-Slack-Signature with timestamp).",
    )
    secret_ref: SecretRef | None = Field(
        default=None,
        description="The Secret key holding the token or signing secret. Read per request, so rotating "
        "the Secret takes effect without a restart.",
    )
    header: str | None = Field(
        default=None,
        max_length=128,
        pattern=HEADER_NAME_PATTERN,
        description="Header carrying the token (bearer; default Authorization) or the signature (hmac "
        "without a preset).",
    )
    prefix: str | None = Field(
        default=None,
        max_length=64,
        description="Text before the token or signature in the header, e.g. 'Bearer ' (the bearer "
        "default) or 'sha256='.",
    )
    algorithm: Algorithm = Field(default="sha256", description="HMAC hash algorithm: sha1, sha256 or sha512.")
    tolerance_seconds: int = Field(
        default=DEFAULT_TOLERANCE_SECONDS,
        ge=1,
        le=3600,
        description="For the stripe and slack presets: how far the signed timestamp may be from now; "
        "requests outside are refused as replays.",
    )

    @model_validator(mode="after")
    def _buildable(self) -> "WebhookAuthSpec":
        if self.preset is not None and self.type != "hmac":
            raise ValueError("auth.preset applies to type hmac only")
        if self.preset is not None and (self.header is not None or self.prefix is not None):
            raise ValueError(f"auth.header and auth.prefix are fixed by the {self.preset} preset")
        self.verifier()
        return self

    def verifier(self) -> RequestVerifier:
        return build_verifier(
            self.type,
            preset=self.preset,
            header=self.header,
            prefix=self.prefix,
            algorithm=self.algorithm,
            tolerance_seconds=self.tolerance_seconds,
        )


class _WebhookOptions(SpecModel):
    """What the CRD block and the library configuration share."""

    mode: Mode = Field(
        default="request",
        description="request: the body is {job_type, payload, queue_name, priority}; payload: the whole JSON "
        "body becomes the job's payload and the job type comes from spec.job (or jobTypeFromHeader).",
    )
    allowed_job_types: list[JobTypeName] = Field(
        default_factory=list,
        max_length=100,
        description="The job types a request may create (403 otherwise). Empty: in request mode only "
        "spec.job.type; in payload mode any type the template or jobTypeFromHeader gives.",
    )
    job_type_from_header: JobTypeFromHeaderSpec | None = Field(
        default=None, description="Payload mode: take the job type from an event header."
    )
    record_headers: list[HeaderName] = Field(
        default_factory=list,
        max_length=20,
        description="Request headers copied into the job's metadata as webhook.header.<lower-case name>. "
        "The delivery id and event type of the presets are recorded anyway.",
    )
    delivery_id_header: str | None = Field(
        default=None,
        max_length=128,
        pattern=HEADER_NAME_PATTERN,
        description="A header carrying the sender's unique delivery id (e.g. X-Gitlab-Event-UUID), used as "
        "the job's idempotency key. Idempotency-Key and the presets' delivery ids are always honoured.",
    )
    payload_schema: dict[str, Any] | None = Field(
        default=None,
        description="A JSON Schema the payload must match (the whole body in payload mode, the payload field "
        "in request mode); a mismatch is answered 400 naming the failing path.",
    )
    rate_limit: RateLimitSpec | None = Field(
        default=None, description="Requests per second for this trigger."
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1,
        le=MAX_BODY_BYTES_LIMIT,
        description="Largest accepted request body in bytes (413 beyond it), enforced while reading.",
    )
    response_timeout_seconds: float = Field(
        default=DEFAULT_RESPONSE_TIMEOUT_SECONDS,
        gt=0,
        le=MAX_RESPONSE_TIMEOUT_SECONDS,
        description="How long a request may wait for the queue service before it is answered 503 with "
        "Retry-After. Well under GitHub's 10 s delivery timeout.",
    )

    @field_validator("payload_schema")
    @classmethod
    def _schema_compiles(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            compile_payload_schema(schema)
        return schema

    @model_validator(mode="after")
    def _header_mapping_in_payload_mode(self) -> "_WebhookOptions":
        if self.job_type_from_header is not None and self.mode != "payload":
            raise ValueError("jobTypeFromHeader applies to mode payload only")
        return self


class WebhookSpec(_WebhookOptions):
    """`spec.webhook`: an HTTP endpoint on the operator's webhook server that creates a job per POST."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.auth.type == 'none' || has(self.auth.secretRef)",
                    "message": "auth types bearer and hmac need auth.secretRef",
                },
                {
                    "rule": "!has(self.jobTypeFromHeader) || (has(self.mode) && self.mode == 'payload')",
                    "message": "jobTypeFromHeader applies to mode payload only",
                },
            ]
        }
    )

    path: str | None = Field(
        default=None,
        max_length=512,
        pattern=PATH_PATTERN,
        description="URL path of the endpoint, unique across the operator. Default: "
        "/hooks/<namespace>/<name>.",
    )
    auth: WebhookAuthSpec = Field(
        description="Authentication of requests. Required: an endpoint without it must say type: none."
    )

    @field_validator("path")
    @classmethod
    def _no_dot_segments(cls, path: str | None) -> str | None:
        if path is not None and any(segment in (".", "..") for segment in path.split("/")):
            raise ValueError(f"path {path!r} must not contain '.' or '..' segments")
        return path

    @model_validator(mode="after")
    def _secret_for_auth(self) -> "WebhookSpec":
        if self.auth.type != "none" and self.auth.secret_ref is None:
            raise ValueError(f"auth type {self.auth.type} needs auth.secretRef")
        return self


class WebhookConfig(_WebhookOptions):
    """The library configuration of a webhook trigger (`WebhookSpec` is its operator-side twin).

    `prefix` is the URL path the endpoint is served at. The secret is either given inline (`secret`) or
    referenced (`auth.secret_ref`, read through the trigger's `SecretResolver` on each request).
    """

    prefix: str = Field(default="/webhooks", max_length=512, description="URL path of the endpoint.")
    auth: WebhookAuthSpec = Field(default_factory=lambda: WebhookAuthSpec(type="none"))
    secret: SecretStr | None = Field(
        default=None, description="The token or signing secret, for library use."
    )
    host: str = Field(default="127.0.0.1", description="Listen address when the trigger runs its own server.")
    port: int = Field(default=8080, ge=0, le=65535, description="Listen port of its own server (0: random).")

    @field_validator("prefix")
    @classmethod
    def _absolute(cls, prefix: str) -> str:
        if not prefix.startswith("/"):
            raise ValueError("prefix must start with /")
        return normalize_path(prefix)

    @model_validator(mode="after")
    def _secret_for_auth(self) -> "WebhookConfig":
        if self.auth.type != "none" and self.secret is None and self.auth.secret_ref is None:
            raise ValueError(f"auth type {self.auth.type} needs secret or auth.secret_ref")
        return self

    @classmethod
    def from_spec(cls, spec: WebhookSpec, *, path: str) -> "WebhookConfig":
        options = spec.model_dump(exclude={"path", "auth"})
        return cls.model_validate({**options, "prefix": path, "auth": spec.auth})


class WebhookJobRequest(BaseModel):
    """The request-mode body: which job to create."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_type: str = Field(min_length=1, max_length=253)
    payload: dict[str, Any] = Field(default_factory=dict)
    queue_name: str | None = Field(default=None, min_length=1, max_length=253)
    priority: int | None = Field(default=None, ge=PRIORITY_MIN, le=PRIORITY_MAX)

    @field_validator("job_type", "queue_name")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value, "identifier")


@dataclass(frozen=True)
class SenderConvention:
    """Where a sender puts its delivery id and event type."""

    delivery_header: str | None = None
    event_header: str | None = None
    delivery_from_body: Callable[[dict[str, Any]], object] | None = None
    event_from_body: Callable[[dict[str, Any]], object] | None = None


def _slack_event_type(body: dict[str, Any]) -> object:
    event = body.get("event")
    if isinstance(event, dict) and isinstance(event.get("type"), str):
        return event["type"]
    return body.get("type")


SENDERS: dict[str, SenderConvention] = {
    "github": SenderConvention(delivery_header="X-GitHub-Delivery", event_header="X-GitHub-Event"),
    "stripe": SenderConvention(
        delivery_from_body=lambda b: b.get("id"), event_from_body=lambda b: b.get("type")
    ),
    "slack": SenderConvention(
        delivery_from_body=lambda b: b.get("event_id"), event_from_body=_slack_event_type
    ),
}
NO_CONVENTION = SenderConvention()


class _Refusal(Exception):
    """A request answered with an error status; `reason` goes to the log, `message` to the sender."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        reason: str = "",
        headers: dict[str, str] | None = None,
        close: bool = False,
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or message
        self.headers = headers or {}
        self.close = close
        self.extra = extra


def _validation_message(exc: ValidationError) -> str:
    """Pydantic's errors without the offending input values."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        location = ".".join(str(part) for part in error["loc"]) or "body"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


class WebhookTrigger(JobTrigger):
    """One webhook endpoint. Constructed directly in library use, by `WebhookSource` in the operator."""

    source_name: ClassVar[str] = "webhook"

    def __init__(
        self,
        job_creator: JobCreator,
        config: WebhookConfig | None = None,
        *,
        ref: TriggerRef | None = None,
        template: JobTemplate | None = None,
        events: TriggerEvents | None = None,
        secrets: SecretResolver | None = None,
        server: WebhookServer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or WebhookConfig()
        self.path = self.config.prefix
        self.ref = ref or TriggerRef(name=f"webhook:{self.path}")
        self.template = template
        self._events = events or LoggingTriggerEvents(self.ref)
        self._emitter = JobEmitter(
            job_creator, ref=self.ref, source=self.source_name, template=template, events=self._events
        )
        self._secrets = secrets
        self._clock = clock
        self._shared_server = server
        self._server: WebhookServer | None = server
        self._verifier = self.config.auth.verifier()
        self._sender = SENDERS.get(self.config.auth.preset or "", NO_CONVENTION)
        self._schema = (
            compile_payload_schema(self.config.payload_schema)
            if self.config.payload_schema is not None
            else None
        )
        self._bucket = (
            TokenBucket(self.config.rate_limit.requests_per_second, self.config.rate_limit.effective_burst)
            if self.config.rate_limit
            else None
        )
        self._allowed = self._allowed_job_types()
        if self.config.mode == "payload" and template is None and self.config.job_type_from_header is None:
            raise ValueError(
                "payload mode needs a job template (template=JobTemplate(type=...)) or job_type_from_header"
            )
        self._metrics = RequestMetrics()
        self._inflight: set[asyncio.Task[Any]] = set()
        self._running = False
        self._queue_failing = False

    def _allowed_job_types(self) -> frozenset[str] | None:
        """None: any job type. Request mode without a list allows only the template's type."""
        if self.config.allowed_job_types:
            return frozenset(self.config.allowed_job_types)
        if self.config.mode == "request" and self.template is not None:
            return frozenset({self.template.type})
        return None

    @property
    def owner(self) -> str:
        return str(self.ref)

    @property
    def is_running(self) -> bool:
        return self._running and self._server is not None and self._server.ready

    @property
    def url(self) -> str:
        """The endpoint's URL as seen from this host (for library users and tests)."""
        if self._server is None:
            raise RuntimeError("the webhook trigger is not started")
        return self._server.url + self.path

    def metrics(self) -> RequestMetrics:
        """Requests by status code and the latency histogram, for the metrics exporter."""
        return self._metrics.snapshot()

    def get_health(self) -> TriggerHealth:
        return self._emitter.health(
            is_running=self.is_running,
            source_status={
                "webhookPath": self.path,
                "webhookRequests": {str(code): n for code, n in sorted(self._metrics.by_status.items())},
            },
        )

    async def start(self) -> None:
        if self._running:
            return
        if self._verifier.needs_secret:
            self._secret()
        if self._shared_server is None:
            own = WebhookServer(self.config.host, self.config.port)
            try:
                await own.start()
            except OSError as exc:
                raise TriggerStartError(
                    f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror or exc}",
                    reason="ListenFailed",
                ) from None
            self._server = own
        elif not self._shared_server.ready:
            raise TriggerStartError("the webhook server is not running", reason="WebhookServerNotReady")
        assert self._server is not None
        try:
            self._server.claim(self.path, self)
        except PathInUseError as exc:
            if self._shared_server is None:
                await self._server.stop()
            raise TriggerStartError(
                f"webhook path {self.path} is already served by JobTrigger {exc.owner}; "
                "set a different spec.webhook.path",
                reason="WebhookPathConflict",
            ) from None
        self._running = True
        logger.info("webhook trigger serving", extra={"trigger": self.owner, "path": self.path})
        self._events.changed()

    async def stop(self) -> None:
        """Release the path (new requests get 404), let requests in flight finish within their response
        timeout, cancel what is left, and stop the own server if there is one."""
        if not self._running:
            return
        self._running = False
        server = self._server
        if server is not None:
            server.release(self.path, self)
        if self._inflight:
            _, pending = await asyncio.wait(
                set(self._inflight), timeout=self.config.response_timeout_seconds + STOP_GRACE_SECONDS
            )
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=STOP_GRACE_SECONDS)
        if self._shared_server is None and server is not None:
            await server.stop()
            self._server = None
        self._events.changed()

    def _secret(self) -> str:
        if self.config.secret is not None:
            return self.config.secret.get_secret_value()
        ref = self.config.auth.secret_ref
        if ref is None or self._secrets is None:
            raise TriggerStartError(
                "no secret configured for webhook authentication", reason="SecretNotFound"
            )
        return self._secrets.get(ref)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one POST routed to this trigger's path."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            response = await self._answer(request, deadline=started + self.config.response_timeout_seconds)
        except _Refusal as refusal:
            response = self._refuse(request, refusal)
        except ConnectionError:
            response = client_gone()
        finally:
            if task is not None:
                self._inflight.discard(task)
        self._metrics.observe(response.status, loop.time() - started)
        self._events.changed()
        return response

    def _refuse(self, request: web.Request, refusal: _Refusal) -> web.Response:
        log = logger.warning if refusal.status >= 500 else logger.info
        log(
            "%s: webhook request refused with %d: %s",
            self.owner,
            refusal.status,
            refusal.reason,
            extra={
                "trigger": self.owner,
                "path": self.path,
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
        response = json_response(refusal.status, body, refusal.headers)
        if refusal.close:
            response.force_close()
        return response

    async def _answer(self, request: web.Request, *, deadline: float) -> web.Response:
        """The answer is due `responseTimeoutSeconds` after the request arrived: a body still arriving
        then is answered 408, a job the queue service has not accepted by then 503."""
        if not self._running:
            raise _Refusal(404, "no webhook at this path", reason="trigger stopping")
        self._check_rate()
        if not _is_json(request):
            raise _Refusal(415, "the body must be JSON (Content-Type: application/json)")
        if not self._verifier.needs_body:
            self._authenticate(request.headers, b"")
        receiving = True
        try:
            async with asyncio.timeout_at(deadline):
                try:
                    body = await read_body_capped(request, self.config.max_body_bytes)
                except UndecodableBody as exc:
                    raise _Refusal(exc.status, str(exc), close=True) from None
                receiving = False
                if body is None:
                    raise _Refusal(413, f"the body exceeds {self.config.max_body_bytes} bytes", close=True)
                if self._verifier.needs_body:
                    self._authenticate(request.headers, body)
                document = _parse_json(body, ENVELOPE_DEPTH if self.config.mode == "request" else MAX_DEPTH)
                if self.config.mode == "request":
                    return await self._create_from_request(request, document)
                return await self._create_from_payload(request, document)
        except TimeoutError:
            if receiving:
                raise _Refusal(408, "the body was not received in time", close=True) from None
            self._emitter.record_error(
                f"queue service did not accept the job within {self.config.response_timeout_seconds:g}s"
            )
            self._queue_trouble("the queue service did not answer in time")
            raise _Refusal(
                503,
                "the job could not be accepted now; retry later",
                reason="job creation timed out",
                headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
            ) from None

    def _check_rate(self) -> None:
        if self._bucket is None:
            return
        wait = self._bucket.try_take()
        if wait > 0:
            raise _Refusal(429, "too many requests", headers={"Retry-After": str(max(1, math.ceil(wait)))})

    def _authenticate(self, headers: Mapping[str, str], body: bytes) -> None:
        try:
            secret = self._secret() if self._verifier.needs_secret else ""
        except TriggerStartError as exc:
            self._emitter.record_error(f"webhook secret unavailable: {exc}")
            raise _Refusal(
                503,
                "the endpoint is not available",
                reason=f"secret unavailable: {exc}",
                headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
            ) from None
        verdict = self._verifier.verify(headers, body, secret, self._clock())
        if not verdict.ok:
            raise _Refusal(401, "unauthorized", reason=f"authentication failed: {verdict.reason}")

    def _check_schema(self, payload: object, where: str) -> None:
        if self._schema is None:
            return
        try:
            error = jsonschema_errors.best_match(self._schema.iter_errors(payload))
        except RecursionError:
            raise _Refusal(
                400,
                f"payload is nested too deeply for payloadSchema (rule {RULE_DEPTH})",
                rule=RULE_DEPTH,
                json_path=where,
            ) from None
        if error is None:
            return
        path = where + error.json_path[1:]
        raise _Refusal(
            400,
            f"payload does not match payloadSchema at {path}: {error.message[:MAX_DETAIL_LENGTH]}",
            reason=f"payload does not match payloadSchema at {path}",
            schema_path=path,
        )

    async def _create_from_request(self, request: web.Request, document: object) -> web.Response:
        try:
            job_request = WebhookJobRequest.model_validate(document)
        except ValidationError as exc:
            raise _Refusal(400, f"invalid job request: {_validation_message(exc)}") from None
        self._check_schema(job_request.payload, "$.payload")
        if self._allowed is not None and job_request.job_type not in self._allowed:
            raise _Refusal(
                403,
                f"job type {job_request.job_type[:100]!r} is not allowed here",
                reason="job type not allowed",
                job_type=job_request.job_type[:100],
            )
        delivery_id = self._delivery_id(request.headers, None)
        return await self._create(
            job_type=job_request.job_type,
            payload=job_request.payload,
            queue_name=job_request.queue_name,
            priority=job_request.priority,
            metadata=self._metadata(request.headers, delivery_id, event=None),
            delivery_id=delivery_id,
        )

    async def _create_from_payload(self, request: web.Request, document: object) -> web.Response:
        if not isinstance(document, dict):
            raise _Refusal(400, "the body must be a JSON object")
        event = self._event_type(request.headers, document)
        if self.config.auth.preset == "slack" and document.get("type") == "url_verification":
            challenge = document.get("challenge")
            if isinstance(challenge, str):
                return json_response(200, {"challenge": challenge})
        job_type = self._job_type_for(request.headers)
        if job_type is None:
            if self.config.auth.preset == "github" and event == "ping":
                return json_response(200, {"status": "pong"})
            return json_response(200, {"status": "ignored", "reason": "no job type for this event"})
        self._check_schema(document, "$")
        if self._allowed is not None and job_type not in self._allowed:
            raise _Refusal(403, f"job type {job_type!r} is not allowed here", reason="job type not allowed")
        delivery_id = self._delivery_id(request.headers, document)
        return await self._create(
            job_type=job_type,
            payload=document,
            queue_name=None,
            priority=None,
            metadata=self._metadata(request.headers, delivery_id, event=event),
            delivery_id=delivery_id,
        )

    def _job_type_for(self, headers: Mapping[str, str]) -> str | None:
        """Payload mode: the job type, or None when the event is to be ignored."""
        assert self.config.mode == "payload"
        by_header = self.config.job_type_from_header
        if by_header is None:
            return self.template.type if self.template else None
        value = headers.get(by_header.header)
        if value is not None and value in by_header.mapping:
            return by_header.mapping[value]
        if by_header.unmapped == "template" and self.template is not None:
            return self.template.type
        return None

    def _delivery_id(self, headers: Mapping[str, str], document: dict[str, Any] | None) -> str | None:
        candidates: list[object] = [headers.get("Idempotency-Key")]
        if self.config.delivery_id_header:
            candidates.append(headers.get(self.config.delivery_id_header))
        if self._sender.delivery_header:
            candidates.append(headers.get(self._sender.delivery_header))
        if document is not None and self._sender.delivery_from_body is not None:
            candidates.append(self._sender.delivery_from_body(document))
        for candidate in candidates:
            if isinstance(candidate, str) and candidate:
                if not _DELIVERY_ID.fullmatch(candidate):
                    raise _Refusal(
                        400, f"the delivery id must be 1 to {MAX_DELIVERY_ID_LENGTH} visible ASCII characters"
                    )
                return candidate
        return None

    def _event_type(self, headers: Mapping[str, str], document: dict[str, Any]) -> str | None:
        event: object = None
        if self._sender.event_header:
            event = headers.get(self._sender.event_header)
        elif self._sender.event_from_body is not None:
            event = self._sender.event_from_body(document)
        return _metadata_text(event) if isinstance(event, str) else None

    def _metadata(
        self, headers: Mapping[str, str], delivery_id: str | None, *, event: str | None
    ) -> dict[str, str]:
        metadata: dict[str, str] = {}
        if delivery_id is not None:
            metadata["webhook.deliveryId"] = delivery_id
        if event is not None:
            metadata["webhook.event"] = event
        for name in self.config.record_headers:
            value = headers.get(name)
            if value is not None:
                metadata[f"webhook.header.{name.lower()}"] = _metadata_text(value)
        return metadata

    async def _create(
        self,
        *,
        job_type: str,
        payload: dict[str, Any],
        queue_name: str | None,
        priority: int | None,
        metadata: dict[str, str],
        delivery_id: str | None,
    ) -> web.Response:
        """Create the job; `_answer`'s deadline cancels the attempt when the queue service is too slow.

        A cancelled attempt may still have reached the queue service; the idempotency key derived from
        the delivery id makes the sender's retry find that job instead of creating a second one.
        """
        idempotency_key = f"{self.ref.key}:{delivery_id}" if delivery_id is not None else None
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
                raise _Refusal(
                    413 if too_large else 400,
                    "the job is larger than the queue service accepts"
                    if too_large
                    else "the queue service refused the job as invalid",
                    reason=f"job creation rejected: {exc}",
                    delivery_id=delivery_id,
                ) from None
            self._queue_trouble(str(exc))
            if exc.retryable:
                raise _Refusal(
                    503,
                    "the job could not be accepted now; retry later",
                    reason=f"job creation failed: {exc}",
                    headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
                    delivery_id=delivery_id,
                ) from None
            raise _Refusal(
                502,
                "the queue service rejected the job",
                reason=f"job creation rejected: {exc}",
                delivery_id=delivery_id,
            ) from None
        if self._queue_failing:
            self._queue_failing = False
            self._events.event("Normal", "QueueRecovered", "webhook deliveries are accepted again")
        return json_response(202, {"job_id": job.id})

    def _queue_trouble(self, detail: str) -> None:
        """One Warning event per outage, not one per request."""
        if not self._queue_failing:
            self._queue_failing = True
            self._events.event(
                "Warning", "JobCreationFailed", f"webhook deliveries are refused with 503: {detail}"
            )


def _is_json(request: web.Request) -> bool:
    if request.headers.get("Content-Type") == "application/json":
        return True
    content_type = request.content_type
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


_DELIVERY_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_DELIVERY_ID_LENGTH}}}")


def _parse_json(body: bytes, max_depth: int) -> object:
    """The body under the input policy (`portico.domain.input_policy`): a refusal names the rule and
    the JSON path, before anything reaches the queue service."""
    try:
        return parse_json(body, max_depth=max_depth)
    except PolicyViolation as exc:
        raise _Refusal(400, str(exc), rule=exc.rule, json_path=exc.path) from None


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _metadata_text(value: str) -> str:
    """A header value as metadata: bounded, valid Unicode even when the header's bytes were not, and
    without control characters."""
    text = value[:MAX_METADATA_VALUE_LENGTH].encode("utf-8", "replace").decode("utf-8")
    return _CONTROL_CHARACTERS.sub(" ", text)


def default_path(ref: TriggerRef) -> str:
    """`/hooks/<namespace>/<name>`: unique per resource, so default paths never collide."""
    return f"/hooks/{ref.namespace}/{ref.name}" if ref.namespace else f"/hooks/{ref.name}"


class WebhookSource(TriggerSource[WebhookSpec]):
    """Builds webhook triggers and owns the one server they share. Every operator replica serves every
    webhook (a Service can spread deliveries over replicas), so the source is not single-active."""

    name = "webhook"
    spec_model = WebhookSpec

    def __init__(
        self, host: str = "0.0.0.0", port: int = 8080, *, limits: ServerLimits | None = None
    ) -> None:
        self.server = WebhookServer(host, port, limits=limits)

    @property
    def single_active(self) -> bool:
        return False

    @property
    def reads_secrets_live(self) -> bool:
        return True

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def ready(self) -> bool:
        return self.server.ready

    async def open(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        await self.server.stop()

    def secret_refs(self, spec: WebhookSpec) -> Sequence[SecretRef]:
        return [spec.auth.secret_ref] if spec.auth.secret_ref is not None else []

    def build(self, spec: WebhookSpec, context: TriggerContext) -> JobTrigger:
        config = WebhookConfig.from_spec(spec, path=spec.path or default_path(context.ref))
        return WebhookTrigger(
            context.job_creator,
            config,
            ref=context.ref,
            template=context.template,
            events=context.events,
            secrets=context.secrets,
            server=self.server,
        )


__all__ = [
    "RateLimitSpec",
    "WebhookAuthSpec",
    "WebhookConfig",
    "WebhookJobRequest",
    "WebhookServer",
    "WebhookSource",
    "WebhookSpec",
    "WebhookTrigger",
]

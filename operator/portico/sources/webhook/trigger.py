"""`WebhookTrigger`: one HTTP endpoint that turns a POST into a job (the request pipeline's rules are in
`pipeline.py`, its answers in docs/webhook.md).

Three ways to serve it, one pipeline behind all of them:

- the seed's way: `WebhookTrigger(job_creator=job_service, config=WebhookConfig(prefix="/webhooks"))`
  serves `POST /webhooks/jobs` with a `WebhookJobRequest` body. Mount `trigger.router` in your ASGI
  application (`app.include_router(trigger.router)` with FastAPI; see `asgi.py` without it) and
  `await trigger.start()`: the application serves the endpoint;
- on its own: without taking the router, `start()` listens on `config.host:config.port`;
- on a shared server: pass `server=WebhookServer(...)` to put several triggers on one port; the
  operator's `WebhookSource` does so for every JobTrigger with a `webhook` block.
"""

import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

from portico.domain.trigger import JobTemplate, TriggerRef
from portico.ports.job_creator import JobCreator
from portico.ports.job_trigger import JobTrigger, TriggerHealth, TriggerStartError
from portico.ports.trigger_events import LoggingTriggerEvents, TriggerEvents
from portico.ports.trigger_source import SecretResolver
from portico.sources.common.emitter import JobEmitter
from portico.sources.webhook.asgi import ASGIApp, build_router
from portico.sources.webhook.mapping import JobMapping, WebhookJobRequest
from portico.sources.webhook.messages import WebhookRefusal, WebhookRequest, WebhookResponse
from portico.sources.webhook.metrics import RequestMetrics
from portico.sources.webhook.pipeline import REQUEST_HEADERS, WebhookPipeline
from portico.sources.webhook.server import PathInUseError, WebhookServer
from portico.sources.webhook.spec import (
    RateLimitSpec,
    WebhookAuthSpec,
    WebhookConfig,
    WebhookSpec,
    normalize_path,
)

logger = logging.getLogger(__name__)

STOP_GRACE_SECONDS = 1.0


class WebhookTrigger(JobTrigger):
    """One webhook endpoint. Constructed directly in library use, by `WebhookSource` in the operator.

    `config` is the endpoint's spec: a `WebhookConfig` (library defaults, served at `{prefix}/jobs`) or
    a `WebhookSpec` (as in a JobTrigger resource, served at its `path`), validated once, by its model.
    """

    source_name: ClassVar[str] = "webhook"

    def __init__(
        self,
        job_creator: JobCreator,
        config: WebhookSpec | None = None,
        *,
        ref: TriggerRef | None = None,
        template: JobTemplate | None = None,
        events: TriggerEvents | None = None,
        secrets: SecretResolver | None = None,
        server: WebhookServer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = config if config is not None else WebhookConfig()
        self.job_creator = job_creator
        self.ref = ref or TriggerRef(name=f"webhook:{self.spec.endpoint_path(TriggerRef(name='webhook'))}")
        self.path = normalize_path(self.spec.endpoint_path(self.ref))
        self.template = template
        self._events = events or LoggingTriggerEvents(self.ref)
        self._emitter = JobEmitter(
            job_creator, ref=self.ref, source=self.source_name, template=template, events=self._events
        )
        self._secrets = secrets
        self._verifier = self.spec.auth.verifier()
        self._pipeline = WebhookPipeline(
            self.spec,
            JobMapping.of(self.spec, template),
            self._emitter,
            events=self._events,
            secret=self._secret,
            clock=clock,
            owner=self.owner,
            idempotency_scope=self.ref.key,
        )
        if type(self)._create_job_endpoint is not WebhookTrigger._create_job_endpoint:
            self._pipeline.endpoint = self._create_job_endpoint
        self._shared_server = server
        self._server: WebhookServer | None = server
        self._router: ASGIApp | None = None
        self._running = False

    @property
    def owner(self) -> str:
        return str(self.ref)

    @property
    def is_running(self) -> bool:
        if not self._running:
            return False
        return self._server.ready if self._server is not None else self._router is not None

    @property
    def url(self) -> str:
        """The endpoint's URL on the trigger's own or shared server (for library users and tests)."""
        if self._server is None:
            raise RuntimeError(f"the webhook trigger is not listening itself; its path is {self.path}")
        return self._server.url + self.path

    @property
    def router(self) -> ASGIApp:
        """The endpoint for your ASGI application: a FastAPI `APIRouter` when FastAPI is installed
        (`app.include_router(trigger.router)`), else a plain ASGI application (see `asgi.py`). Once taken,
        `start()` opens no listener of its own: the application serves the endpoint."""
        if self._router is None:
            self._router = build_router(self.handle, self.path, on_startup=self.start, on_shutdown=self.stop)
        return self._router

    def metrics(self) -> RequestMetrics:
        """Requests by status code and the latency histogram, for the metrics exporter."""
        return self._pipeline.metrics.snapshot()

    def get_health(self) -> TriggerHealth:
        by_status = self._pipeline.metrics.by_status
        return self._emitter.health(
            is_running=self.is_running,
            source_status={
                "webhookPath": self.path,
                "webhookRequests": {str(code): n for code, n in sorted(by_status.items())},
            },
        )

    async def start(self) -> None:
        if self._running:
            return
        if self._verifier.needs_secret:
            self._secret()
        if self._shared_server is None and self._router is None:
            await self._listen()
        elif self._shared_server is not None and not self._shared_server.ready:
            raise TriggerStartError("the webhook server is not running", reason="WebhookServerNotReady")
        if self._server is not None:
            try:
                self._server.claim(self.path, self)
            except PathInUseError as exc:
                if self._shared_server is None:
                    await self._server.stop()
                    self._server = None
                raise TriggerStartError(
                    f"webhook path {self.path} is already served by JobTrigger {exc.owner}; "
                    "set a different spec.webhook.path",
                    reason="WebhookPathConflict",
                ) from None
        self._pipeline.accepting = True
        self._running = True
        logger.info("webhook trigger serving", extra={"trigger": self.owner, "path": self.path})
        self._events.changed()

    async def _listen(self) -> None:
        host = self.spec.host if isinstance(self.spec, WebhookConfig) else "127.0.0.1"
        port = self.spec.port if isinstance(self.spec, WebhookConfig) else 8080
        own = WebhookServer(host, port)
        try:
            await own.start()
        except OSError as exc:
            raise TriggerStartError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}", reason="ListenFailed"
            ) from None
        self._server = own

    async def stop(self) -> None:
        """Release the path (new requests get 404), let requests in flight finish within their response
        timeout, cancel what is left, and stop the own server if there is one."""
        if not self._running:
            return
        self._running = False
        self._pipeline.accepting = False
        server = self._server
        if server is not None:
            server.release(self.path, self)
        await self._pipeline.inflight.drain(
            self.spec.response_timeout_seconds + STOP_GRACE_SECONDS, cancel_wait_seconds=STOP_GRACE_SECONDS
        )
        if self._shared_server is None and server is not None:
            await server.stop()
            self._server = None
        self._events.changed()

    async def handle(self, request: WebhookRequest) -> WebhookResponse:
        """Answer one request routed to this trigger's path (by a server or the router)."""
        return await self._pipeline.handle(request)

    async def _create_job_endpoint(self, request: WebhookJobRequest) -> Any:
        """The job a request-mode body asks for: checked against `payloadSchema` and the allowed job
        types, created with the delivery id as idempotency key. Raises `WebhookRefusal` with the status
        the endpoint answers.

        Called directly, it is the seed's testing pattern. A subclass may override it, as the seed's FAQ
        does (priorities by job type, its own validation): the endpoint then calls the override once the
        body is parsed and authenticated, answers 202 with what it returns (a `Job` as `{"job_id": ...}`,
        a dict as it is), and an exception with a `status_code` (FastAPI's `HTTPException`) as that
        status with its `detail`.
        """
        return await self._pipeline.create_requested(request, REQUEST_HEADERS.get())

    def _secret(self) -> str:
        if isinstance(self.spec, WebhookConfig) and self.spec.secret is not None:
            return self.spec.secret.get_secret_value()
        ref = self.spec.auth.secret_ref
        if ref is None or self._secrets is None:
            raise TriggerStartError(
                "no secret configured for webhook authentication", reason="SecretNotFound"
            )
        return self._secrets.get(ref)


__all__ = [
    "RateLimitSpec",
    "WebhookAuthSpec",
    "WebhookConfig",
    "WebhookJobRequest",
    "WebhookRefusal",
    "WebhookServer",
    "WebhookSpec",
    "WebhookTrigger",
]

"""The RabbitMQ source (`spec.amqp`): messages on an AMQP 0-9-1 queue become jobs.

A message is acknowledged only after the queue service accepted its job, so a crash, a broker restart or
a lost connection never loses one: the broker delivers it again, and the job's idempotency key (the
message id, or a hash of the body) makes the second delivery return the job the first one created.

Three outcomes per message:
- accepted: ack.
- the queue service is unavailable (a retryable failure): wait (exponential backoff shared by all
  in-flight messages, so a queue-service outage costs a few attempts per message, not a hot loop), then
  nack with requeue.
- the message can never become a job (not JSON, an event type the mapping rejects, a job the queue
  service refuses for good): reject without requeue, which moves it to the queue's dead-letter exchange
  when it has one; counted in `messagesRejected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from pydantic import ConfigDict, Field, model_validator
from yarl import URL

from portico.domain.input_policy import PolicyViolation, parse_json
from portico.domain.model import SpecModel
from portico.domain.trigger import JobTemplate, SecretRef, TriggerRef
from portico.ports.job_creator import JobCreationError, JobCreator
from portico.ports.job_trigger import JobTrigger, TriggerHealth, TriggerStartError
from portico.ports.trigger_events import TriggerEvents
from portico.ports.trigger_source import TriggerContext, TriggerSource
from portico.sources.common.emitter import JobEmitter

logger = logging.getLogger(__name__)

SOURCE = "amqp"
FIELD_PATH_PATTERN = r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"
CONNECT_TIMEOUT = 10.0
STOP_GRACE_SECONDS = 10.0
MAX_REQUEUE_DELAY = 60.0
WARNING_INTERVAL = 60.0
UnmappedPolicy = Literal["UseTemplate", "Reject"]


class AmqpBinding(SpecModel):
    """A binding of the consumed queue to an exchange, declared when the trigger starts."""

    exchange: str = Field(
        min_length=1, max_length=255, description="Exchange to bind the queue to; it must exist."
    )
    routing_key: str = Field(
        default="",
        max_length=255,
        description="Routing key (or topic pattern such as `order.*`) of the binding.",
    )


class AmqpSpec(SpecModel):
    """Consume a RabbitMQ (AMQP 0-9-1) queue and create one job per message.

    A message is acknowledged once its job was accepted, requeued after a backoff when the queue service
    is unavailable, and rejected (dead-lettered, when the queue has a dead-letter exchange) when it can
    never become a job. The job's idempotency key is the message id, or a hash of the body without one."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.deadLetterExchange) || (has(self.declareQueue) && self.declareQueue)",
                    "message": "deadLetterExchange needs declareQueue: true",
                },
                {
                    "rule": "!has(self.unmappedPolicy) || self.unmappedPolicy != 'Reject' "
                    "|| (has(self.jobTypeMapping) && size(self.jobTypeMapping) > 0)",
                    "message": "unmappedPolicy Reject needs a jobTypeMapping",
                },
            ]
        }
    )

    url_secret_ref: SecretRef = Field(
        description="Secret key holding the broker URL, amqp://user:password@host:5672/vhost (or amqps://)."
    )
    queue: str = Field(min_length=1, max_length=255, description="Name of the queue to consume.")
    declare_queue: bool = Field(
        default=False,
        description="Declare the queue (durable) when it does not exist; otherwise the queue must exist.",
    )
    dead_letter_exchange: str | None = Field(
        default=None,
        max_length=255,
        description="Dead-letter exchange of the declared queue (x-dead-letter-exchange): where rejected "
        "messages go. Only with declareQueue; an existing queue keeps its own arguments.",
    )
    bindings: list[AmqpBinding] = Field(
        default_factory=list, max_length=16, description="Bindings of the queue to exchanges."
    )
    prefetch: int = Field(
        default=32,
        ge=1,
        le=1000,
        description="Most unacknowledged messages at a time; they are turned into jobs concurrently.",
    )
    event_type_field: str | None = Field(
        default=None,
        max_length=253,
        pattern=FIELD_PATH_PATTERN,
        description="Dotted path of the event type in the JSON body (e.g. `type` or `meta.event`); when "
        "unset or absent from a message, the AMQP `type` property is used.",
    )
    job_type_mapping: dict[str, str] = Field(
        default_factory=dict, description="Event type to job type. Empty: every message uses spec.job.type."
    )
    unmapped_policy: UnmappedPolicy = Field(
        default="UseTemplate",
        description="For an event type missing from jobTypeMapping: UseTemplate creates a job of "
        "spec.job.type; Reject rejects (dead-letters) the message.",
    )
    requeue_delay_seconds: float = Field(
        default=1.0,
        ge=0.01,
        le=300,
        description="Wait before requeueing a message whose job the queue service could not take; doubles "
        "while the failures continue, up to 60 seconds.",
    )
    reconnect_interval_seconds: float = Field(
        default=5.0, ge=0.1, le=300, description="Wait between attempts to reconnect to the broker."
    )

    @model_validator(mode="after")
    def _consistent(self) -> AmqpSpec:
        if self.dead_letter_exchange is not None and not self.declare_queue:
            raise ValueError("deadLetterExchange needs declareQueue: true")
        if self.unmapped_policy == "Reject" and not self.job_type_mapping:
            raise ValueError("unmappedPolicy Reject needs a jobTypeMapping")
        for event_type, job_type in self.job_type_mapping.items():
            if not event_type or not job_type.strip():
                raise ValueError(f"jobTypeMapping: {event_type!r} must map to a non-empty job type")
        return self


@dataclass(frozen=True)
class _JobRequest:
    job_type: str | None
    payload: dict[str, Any]
    metadata: dict[str, str]
    idempotency_key: str


class _Poison(Exception):
    """A message that can never become a job."""


def lookup(body: Any, path: str) -> Any:
    """The value at a dotted path of a JSON object, None when absent."""
    value = body
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def broker_target(url: str) -> str:
    """`host:port/vhost` of a broker URL: enough to recognise it, nothing secret."""
    parsed = URL(url)
    port = parsed.port or (5671 if parsed.scheme == "amqps" else 5672)
    vhost = parsed.path[1:] if len(parsed.path) > 1 else "/"
    return f"{parsed.host}:{port}/{vhost}"


class RabbitMQTrigger(JobTrigger):
    """Consumes one queue. Library use: `RabbitMQTrigger(job_creator=..., config=AmqpSpec(...),
    url="amqp://...", template=JobTemplate(type="order.process"))`."""

    def __init__(
        self,
        *,
        job_creator: JobCreator,
        config: AmqpSpec,
        url: str,
        template: JobTemplate | None = None,
        ref: TriggerRef | None = None,
        events: TriggerEvents | None = None,
    ) -> None:
        parsed = URL(url) if "://" in url else None
        if parsed is None or parsed.scheme not in ("amqp", "amqps") or not parsed.host:
            raise TriggerStartError(
                "the broker URL must look like amqp://user:password@host:5672/vhost (or amqps://)",
                reason="InvalidURL",
                retryable=False,
            )
        self.config = config
        self.ref = ref or TriggerRef(name=f"amqp-{config.queue}")
        self.emitter = JobEmitter(job_creator, ref=self.ref, source=SOURCE, template=template, events=events)
        self._url = url
        self._secrets = [s for s in (parsed.password, parsed.raw_password, url) if s]
        self._target = broker_target(url)
        self._connection: AbstractRobustConnection | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._connected = False
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._failure_streak = 0
        self._backoff_until = 0.0
        self.messages_rejected = 0
        self.messages_requeued = 0
        self._last_warning: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    # --- JobTrigger -------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._connection is not None:
            return
        self._stopping = asyncio.Event()
        try:
            connection = await aio_pika.connect_robust(
                self._url,
                timeout=CONNECT_TIMEOUT,
                reconnect_interval=self.config.reconnect_interval_seconds,
                client_properties={"connection_name": f"portico trigger {self.ref}"},
            )
        except aiormq.exceptions.ProbableAuthenticationError as exc:
            raise TriggerStartError(
                f"the broker at {self._target} refused the credentials: {self._redact(str(exc))}",
                reason="AuthenticationFailed",
            ) from None
        except (*aio_pika.exceptions.CONNECTION_EXCEPTIONS, TimeoutError) as exc:
            raise TriggerStartError(
                f"cannot connect to the broker at {self._target}: {self._describe(exc)}",
                reason="BrokerUnreachable",
            ) from None
        try:
            await self._consume(connection)
        except BaseException:
            await connection.close()
            raise
        connection.close_callbacks.add(self._on_connection_lost)
        connection.reconnect_callbacks.add(self._on_reconnected)
        self._connection = connection
        self._connected = True
        self.emitter.events.changed()

    async def stop(self) -> None:
        """Stop consuming, let in-flight messages finish (a message waiting to be requeued is requeued at
        once), then close; the broker returns anything still unacknowledged to the queue."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        self._stopping.set()
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._queue.cancel(self._consumer_tag), 5)
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight), timeout=STOP_GRACE_SECONDS)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        self._queue = self._consumer_tag = None
        self._connected = False
        with contextlib.suppress(Exception):
            await connection.close()
        self.emitter.events.changed()

    @property
    def is_running(self) -> bool:
        return self._connection is not None and self._connected and not self._stopping.is_set()

    def get_health(self) -> TriggerHealth:
        return self.emitter.health(
            is_running=self.is_running,
            source_status={
                "amqpQueue": self.config.queue,
                "connected": self._connected,
                "messagesRejected": self.messages_rejected,
                "messagesRequeued": self.messages_requeued,
            },
        )

    # --- setup ------------------------------------------------------------------------------------------

    async def _consume(self, connection: AbstractRobustConnection) -> None:
        """Declare (or check) the queue and its bindings and start consuming. A missing queue or exchange
        is reported by name."""
        config = self.config
        step = f"queue {config.queue!r}"
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=config.prefetch)
            if config.declare_queue:
                arguments = {}
                if config.dead_letter_exchange is not None:
                    arguments["x-dead-letter-exchange"] = config.dead_letter_exchange
                queue = await channel.declare_queue(config.queue, durable=True, arguments=arguments)
            else:
                queue = await channel.declare_queue(config.queue, passive=True)
            for binding in config.bindings:
                step = f"exchange {binding.exchange!r}"
                await queue.bind(binding.exchange, routing_key=binding.routing_key)
            step = f"queue {config.queue!r}"
            self._consumer_tag = await queue.consume(self._on_message)
            self._queue = queue
        except aiormq.exceptions.ChannelNotFoundEntity:
            hint = "; create it or set declareQueue: true" if step.startswith("queue") else ""
            raise TriggerStartError(
                f"{step} does not exist on the broker at {self._target}{hint}", reason="NotFound"
            ) from None
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            raise TriggerStartError(
                f"{step} exists with other settings than this trigger declares: {self._describe(exc)}",
                reason="QueueMismatch",
            ) from None
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise TriggerStartError(
                f"{step}: access refused by the broker: {self._describe(exc)}", reason="PermissionDenied"
            ) from None
        except (*aio_pika.exceptions.CONNECTION_EXCEPTIONS, TimeoutError) as exc:
            raise TriggerStartError(
                f"{step}: the broker at {self._target} failed: {self._describe(exc)}",
                reason="BrokerUnreachable",
            ) from None

    def _on_connection_lost(self, _sender: Any, exc: BaseException | None = None) -> None:
        if self._stopping.is_set() or not self._connected:
            return
        self._connected = False
        detail = f": {self._describe(exc)}" if exc is not None else ""
        self.emitter.record_error(f"connection to the broker at {self._target} lost{detail}; reconnecting")

    def _on_reconnected(self, _sender: Any) -> None:
        self._connected = True
        self.emitter.events.event("Normal", "Reconnected", f"reconnected to the broker at {self._target}")
        self.emitter.events.changed()

    # --- messages ---------------------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self.handle(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Turn one delivery into a job and settle it with the broker (ack, requeue or reject)."""
        try:
            request = self.job_request(message)
        except _Poison as poison:
            await self._reject(message, str(poison))
            return
        try:
            await self.emitter.emit(
                job_type=request.job_type,
                payload=request.payload,
                metadata=request.metadata,
                idempotency_key=request.idempotency_key,
            )
        except JobCreationError as exc:
            if exc.retryable:
                await self._requeue_later(message)
            else:
                await self._reject(message, f"the queue service rejected its job: {exc}", recorded=True)
            return
        self._failure_streak = 0
        self._backoff_until = 0.0
        await self._settle(message.ack(), "ack")

    def job_request(self, message: AbstractIncomingMessage) -> _JobRequest:
        """What job a message asks for; raises `_Poison` when it can never become one."""
        try:
            body = parse_json(message.body)
        except PolicyViolation as exc:
            raise _Poison(f"the body is refused by the input policy: {exc}") from None
        event_type: str | None = None
        if self.config.event_type_field is not None:
            value = lookup(body, self.config.event_type_field)
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                event_type = str(value)
        if event_type is None and message.type:
            event_type = message.type
        job_type = self.config.job_type_mapping.get(event_type) if event_type is not None else None
        if job_type is None:
            if self.config.job_type_mapping and self.config.unmapped_policy == "Reject":
                what = (
                    f"event type {event_type!r}" if event_type is not None else "a message without event type"
                )
                raise _Poison(f"{what} is not in jobTypeMapping")
            if self.emitter.template is None:
                raise _Poison(f"no job type for event type {event_type!r} and no job template")
        metadata = {"amqp.queue": self.config.queue}
        if event_type is not None:
            metadata["amqp.event_type"] = event_type[:253]
        if message.message_id:
            metadata["amqp.message_id"] = message.message_id[:253]
            identity = message.message_id
        else:
            identity = "sha256:" + hashlib.sha256(message.body).hexdigest()
        if message.routing_key:
            metadata["amqp.routing_key"] = message.routing_key[:253]
        return _JobRequest(
            job_type=job_type,
            payload=body if isinstance(body, dict) else {"body": body},
            metadata=metadata,
            idempotency_key=f"{SOURCE}/{self.ref.key}/{identity}",
        )

    async def _requeue_later(self, message: AbstractIncomingMessage) -> None:
        """Hold the message for the current backoff, then give it back to the broker. Every failure
        within one backoff window shares the window; the next window is twice as long."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self._backoff_until:
            self._failure_streak += 1
            delay = min(
                self.config.requeue_delay_seconds * 2 ** (self._failure_streak - 1), MAX_REQUEUE_DELAY
            )
            self._backoff_until = now + delay
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), max(0.0, self._backoff_until - now))
        self.messages_requeued += 1
        await self._settle(message.nack(requeue=True), "requeue")

    async def _reject(self, message: AbstractIncomingMessage, reason: str, *, recorded: bool = False) -> None:
        self.messages_rejected += 1
        name = message.message_id or f"#{message.delivery_tag}"
        text = f"message {name} rejected: {reason}"
        if not recorded:
            self.emitter.record_error(text)
        self._warn("MessageRejected", text)
        await self._settle(message.reject(requeue=False), "reject")

    async def _settle(self, operation: Awaitable[None], what: str) -> None:
        """Ack, nack or reject; after a lost connection the broker redelivers the message anyway, and its
        idempotency key keeps the second job from existing."""
        try:
            await operation
        except Exception as exc:  # the channel is gone: nothing to settle any more
            logger.info(
                "%s: could not %s a message (%s); the broker will deliver it again", self.ref, what, exc
            )

    def _warn(self, reason: str, message: str) -> None:
        """A Warning event, at most one per reason per minute (a burst of poison messages is one event
        with a count, not a flood)."""
        now = time.monotonic()
        last = self._last_warning.get(reason)
        if last is not None and now - last < WARNING_INTERVAL:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        suppressed = self._suppressed.pop(reason, 0)
        self._last_warning[reason] = now
        more = f" (and {suppressed} more since the last report)" if suppressed else ""
        self.emitter.events.event("Warning", reason, message + more)

    def _describe(self, exc: BaseException) -> str:
        text = str(exc)
        return self._redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)

    def _redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


class AmqpSource(TriggerSource[AmqpSpec]):
    name: ClassVar[str] = SOURCE
    spec_model: ClassVar[type[SpecModel]] = AmqpSpec

    def secret_refs(self, spec: AmqpSpec) -> Sequence[SecretRef]:
        return (spec.url_secret_ref,)

    def build(self, spec: AmqpSpec, context: TriggerContext) -> JobTrigger:
        return RabbitMQTrigger(
            job_creator=context.job_creator,
            config=spec,
            url=context.secrets.get(spec.url_secret_ref),
            template=context.template,
            ref=context.ref,
            events=context.events,
        )

"""The RabbitMQ trigger: messages on an AMQP 0-9-1 queue become jobs.

A message is acknowledged only after the queue service accepted its job, so a crash, a broker restart or
a lost connection never loses one: the broker delivers it again, and the job's idempotency key (the
message id, or a hash of the body) makes the second delivery return the job the first one created.

Four outcomes per message:
- accepted: ack.
- ignored (an event type outside jobTypeMapping, with unmappedPolicy Ignore): ack, no job.
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
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from yarl import URL

from portico.domain.redaction import Redactor, url_location
from portico.domain.trigger import JobTemplate, TriggerRef
from portico.ports.job_creator import JobCreationError, JobCreator
from portico.ports.job_trigger import JobTrigger, TriggerHealth, TriggerStartError
from portico.ports.trigger_events import TriggerEvents
from portico.sources.amqp.mapping import SOURCE, Poison, job_request
from portico.sources.amqp.spec import AmqpBinding, AmqpSpec, UnmappedPolicy
from portico.sources.common.backoff import SharedBackoff
from portico.sources.common.drain import InFlight
from portico.sources.common.emitter import JobEmitter

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
STOP_GRACE_SECONDS = 10.0
MAX_REQUEUE_DELAY = 60.0
WARNING_INTERVAL = 60.0


AMQP_PORTS = {"amqp": 5672, "amqps": 5671}


class RabbitMQTrigger(JobTrigger):
    """Consumes one queue and creates one job per message.

    As in the seed: `RabbitMQTrigger(job_creator=job_service, rabbitmq_url="amqp://localhost",
    queue_name="job_events", job_type_mapping={"user.created": "email.welcome"})` declares the queue
    (durable), reads `event_type` from the JSON body, takes the job's payload, queue and priority from the
    body's `payload`, `queue` and `priority`, and acknowledges messages of unmapped types without a job.
    The spec's other options are keyword arguments; the operator passes a parsed `spec` (the URL read from
    its Secret) and the resource's `template` instead.
    """

    def __init__(
        self,
        job_creator: JobCreator,
        rabbitmq_url: str,
        queue_name: str | None = None,
        job_type_mapping: Mapping[str, str] | None = None,
        *,
        spec: AmqpSpec | None = None,
        template: JobTemplate | None = None,
        declare_queue: bool = True,
        event_type_field: str | None = "event_type",
        payload_field: str | None = "payload",
        queue_field: str | None = "queue",
        priority_field: str | None = "priority",
        unmapped_policy: UnmappedPolicy | None = None,
        prefetch: int | None = None,
        dead_letter_exchange: str | None = None,
        bindings: Sequence[AmqpBinding] = (),
        requeue_delay_seconds: float | None = None,
        reconnect_interval_seconds: float | None = None,
        ref: TriggerRef | None = None,
        events: TriggerEvents | None = None,
    ) -> None:
        if spec is None:
            if queue_name is None:
                raise TypeError("RabbitMQTrigger needs a queue_name (or a parsed spec)")
            mapping = dict(job_type_mapping or {})
            options = {
                "prefetch": prefetch,
                "dead_letter_exchange": dead_letter_exchange,
                "requeue_delay_seconds": requeue_delay_seconds,
                "reconnect_interval_seconds": reconnect_interval_seconds,
            }
            spec = AmqpSpec.model_validate(
                {
                    "queue": queue_name,
                    "declare_queue": declare_queue,
                    "event_type_field": event_type_field,
                    "payload_field": payload_field,
                    "queue_field": queue_field,
                    "priority_field": priority_field,
                    "job_type_mapping": mapping,
                    "unmapped_policy": unmapped_policy or ("Ignore" if mapping else "UseTemplate"),
                    "bindings": list(bindings),
                    **{name: value for name, value in options.items() if value is not None},
                }
            )
        elif queue_name is not None or job_type_mapping is not None:
            raise TypeError("give RabbitMQTrigger either a spec or queue_name and options, not both")
        parsed = URL(rabbitmq_url) if "://" in rabbitmq_url else None
        if parsed is None or parsed.scheme not in ("amqp", "amqps") or not parsed.host:
            raise TriggerStartError(
                "the broker URL must look like amqp://user:password@host:5672/vhost (or amqps://)",
                reason="InvalidURL",
                retryable=False,
            )
        self.spec = spec
        self.ref = ref or TriggerRef(name=f"amqp-{spec.queue}")
        self.emitter = JobEmitter(job_creator, ref=self.ref, source=SOURCE, template=template, events=events)
        self._url = rabbitmq_url
        self._target = url_location(rabbitmq_url, AMQP_PORTS)
        self._redact = Redactor([parsed.password, parsed.raw_password, rabbitmq_url])
        self._connection: AbstractRobustConnection | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._connected = False
        self._stopping = asyncio.Event()
        self._in_flight = InFlight()
        self._backoff = SharedBackoff(spec.requeue_delay_seconds, MAX_REQUEUE_DELAY)
        self.messages_rejected = 0
        self.messages_requeued = 0
        self.messages_ignored = 0
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
                reconnect_interval=self.spec.reconnect_interval_seconds,
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
        await self._in_flight.drain(STOP_GRACE_SECONDS)
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
                "amqpQueue": self.spec.queue,
                "connected": self._connected,
                "messagesRejected": self.messages_rejected,
                "messagesRequeued": self.messages_requeued,
            },
        )

    # --- setup ------------------------------------------------------------------------------------------

    async def _consume(self, connection: AbstractRobustConnection) -> None:
        """Declare (or check) the queue and its bindings and start consuming. A missing queue or exchange
        is reported by name."""
        spec = self.spec
        step = f"queue {spec.queue!r}"
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=spec.prefetch)
            if spec.declare_queue:
                arguments = {}
                if spec.dead_letter_exchange is not None:
                    arguments["x-dead-letter-exchange"] = spec.dead_letter_exchange
                queue = await channel.declare_queue(spec.queue, durable=True, arguments=arguments)
            else:
                queue = await channel.declare_queue(spec.queue, passive=True)
            for binding in spec.bindings:
                step = f"exchange {binding.exchange!r}"
                await queue.bind(binding.exchange, routing_key=binding.routing_key)
            step = f"queue {spec.queue!r}"
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
            request = job_request(
                self.spec, message, ref_key=self.ref.key, has_template=self.emitter.template is not None
            )
        except Poison as poison:
            await self._reject(message, str(poison))
            return
        if request is None:
            self.messages_ignored += 1
            await self._settle(message.ack(), "ack")
            return
        try:
            await self.emitter.emit(
                job_type=request.job_type,
                payload=request.payload,
                queue_name=request.queue_name,
                priority=request.priority,
                metadata=request.metadata,
                idempotency_key=request.idempotency_key,
            )
        except JobCreationError as exc:
            if exc.retryable:
                await self._requeue_later(message)
            else:
                await self._reject(message, f"the queue service rejected its job: {exc}", recorded=True)
            return
        self._backoff.succeeded()
        await self._settle(message.ack(), "ack")

    async def _requeue_later(self, message: AbstractIncomingMessage) -> None:
        """Hold the message for the shared backoff (or until stop), then give it back to the broker."""
        await self._backoff.wait(self._stopping)
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

"""The RabbitMQ source's spec (`spec.amqp`): the one model the CRD, `portico validate` and the library
read."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from portico.domain.model import SpecModel
from portico.domain.trigger import SecretRef
from portico.sources.common.secret_ref import required_in_manifests

FIELD_PATH_PATTERN = r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"
UnmappedPolicy = Literal["UseTemplate", "Reject", "Ignore"]
RULES = [
    {
        "rule": "!has(self.deadLetterExchange) || (has(self.declareQueue) && self.declareQueue)",
        "message": "deadLetterExchange needs declareQueue: true",
    },
    {
        "rule": "!has(self.unmappedPolicy) || self.unmappedPolicy == 'UseTemplate' "
        "|| (has(self.jobTypeMapping) && size(self.jobTypeMapping) > 0)",
        "message": "unmappedPolicy Reject or Ignore needs a jobTypeMapping",
    },
]


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

    model_config = ConfigDict(json_schema_extra=required_in_manifests("urlSecretRef", RULES))

    url_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret key holding the broker URL, amqp://user:password@host:5672/vhost (or amqps://).",
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
        "spec.job.type; Reject rejects (dead-letters) the message; Ignore acknowledges it without a job.",
    )
    payload_field: str | None = Field(
        default=None,
        max_length=253,
        pattern=FIELD_PATH_PATTERN,
        description="Dotted path of the job payload in the JSON body (e.g. `payload`); absent from a "
        "message: an empty payload. Unset: the whole body is the payload.",
    )
    queue_field: str | None = Field(
        default=None,
        max_length=253,
        pattern=FIELD_PATH_PATTERN,
        description="Dotted path of a queue name in the JSON body that overrides spec.job.queue, when the "
        "message carries one. Unset: messages cannot choose the queue.",
    )
    priority_field: str | None = Field(
        default=None,
        max_length=253,
        pattern=FIELD_PATH_PATTERN,
        description="Dotted path of an integer priority in the JSON body that overrides spec.job.priority, "
        "when the message carries one. Unset: messages cannot choose the priority.",
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
        if self.unmapped_policy != "UseTemplate" and not self.job_type_mapping:
            raise ValueError(f"unmappedPolicy {self.unmapped_policy} needs a jobTypeMapping")
        for event_type, job_type in self.job_type_mapping.items():
            if not event_type or not job_type.strip():
                raise ValueError(f"jobTypeMapping: {event_type!r} must map to a non-empty job type")
        return self

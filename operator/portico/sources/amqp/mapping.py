"""What job a message asks for: its event type, the job type it maps to, the payload, queue and priority
it carries, and the identity that makes a redelivery the same job. Pure: no broker, no I/O."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from portico.domain.input_policy import PolicyViolation, parse_json
from portico.domain.trigger import PRIORITY_MAX, PRIORITY_MIN
from portico.sources.amqp.spec import AmqpSpec

SOURCE = "amqp"


class Delivery(Protocol):
    """The parts of an AMQP delivery the mapping reads (aio-pika's incoming message has them)."""

    @property
    def body(self) -> bytes: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def type(self) -> str | None: ...
    @property
    def routing_key(self) -> str | None: ...


@dataclass(frozen=True)
class JobRequest:
    """The job one message becomes. `job_type`, `queue_name` and `priority` None: the template's."""

    job_type: str | None
    payload: dict[str, Any]
    metadata: dict[str, str]
    idempotency_key: str
    queue_name: str | None = None
    priority: int | None = None


class Poison(Exception):
    """A message that can never become a job."""


def lookup(body: Any, path: str) -> Any:
    """The value at a dotted path of a JSON object, None when absent."""
    value = body
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def event_type_of(spec: AmqpSpec, body: Any, delivery: Delivery) -> str | None:
    """From the body's `eventTypeField` when it holds a scalar, else the AMQP `type` property."""
    if spec.event_type_field is not None:
        value = lookup(body, spec.event_type_field)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    return delivery.type or None


def identity(delivery: Delivery) -> str:
    """The message id, or a hash of the body for publishers that set none."""
    if delivery.message_id:
        return delivery.message_id
    return "sha256:" + hashlib.sha256(delivery.body).hexdigest()


def job_request(spec: AmqpSpec, delivery: Delivery, *, ref_key: str, has_template: bool) -> JobRequest | None:
    """The job a message asks for; None when the spec ignores it. Raises `Poison` when it can never
    become one."""
    try:
        body = parse_json(delivery.body)
    except PolicyViolation as exc:
        raise Poison(f"the body is refused by the input policy: {exc}") from None
    event_type = event_type_of(spec, body, delivery)
    job_type = spec.job_type_mapping.get(event_type) if event_type is not None else None
    if job_type is None:
        if spec.job_type_mapping and spec.unmapped_policy == "Ignore":
            return None
        if spec.job_type_mapping and spec.unmapped_policy == "Reject":
            what = f"event type {event_type!r}" if event_type is not None else "a message without event type"
            raise Poison(f"{what} is not in jobTypeMapping")
        if not has_template:
            raise Poison(f"no job type for event type {event_type!r} and no job template")
    metadata = {"amqp.queue": spec.queue}
    if event_type is not None:
        metadata["amqp.event_type"] = event_type[:253]
    if delivery.message_id:
        metadata["amqp.message_id"] = delivery.message_id[:253]
    if delivery.routing_key:
        metadata["amqp.routing_key"] = delivery.routing_key[:253]
    return JobRequest(
        job_type=job_type,
        payload=_payload(spec, body),
        metadata=metadata,
        idempotency_key=f"{SOURCE}/{ref_key}/{identity(delivery)}",
        queue_name=_queue(spec, body),
        priority=_priority(spec, body),
    )


def _payload(spec: AmqpSpec, body: Any) -> dict[str, Any]:
    if spec.payload_field is None:
        return body if isinstance(body, dict) else {"body": body}
    value = lookup(body, spec.payload_field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Poison(f"{spec.payload_field} is not a JSON object")
    return value


def _queue(spec: AmqpSpec, body: Any) -> str | None:
    if spec.queue_field is None:
        return None
    value = lookup(body, spec.queue_field)
    if value is not None and not isinstance(value, str):
        raise Poison(f"{spec.queue_field} is not a queue name")
    return value


def _priority(spec: AmqpSpec, body: Any) -> int | None:
    if spec.priority_field is None:
        return None
    value = lookup(body, spec.priority_field)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise Poison(f"{spec.priority_field} is not an integer from {PRIORITY_MIN} to {PRIORITY_MAX}")
    return value

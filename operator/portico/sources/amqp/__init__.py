"""Messages on a RabbitMQ queue: `RabbitMQTrigger` creates one job per message."""

from portico.sources.amqp.mapping import JobRequest, Poison, job_request, lookup
from portico.sources.amqp.source import AmqpSource
from portico.sources.amqp.spec import AmqpBinding, AmqpSpec
from portico.sources.amqp.trigger import RabbitMQTrigger

__all__ = [
    "AmqpBinding",
    "AmqpSource",
    "AmqpSpec",
    "JobRequest",
    "Poison",
    "RabbitMQTrigger",
    "job_request",
    "lookup",
]

"""Messages on a RabbitMQ queue: `RabbitMQTrigger` creates a job per message and acks it only after."""

from portico.sources.amqp.trigger import AmqpSource, AmqpSpec, RabbitMQTrigger

__all__ = ["AmqpSource", "AmqpSpec", "RabbitMQTrigger"]

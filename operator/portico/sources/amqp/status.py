"""What an AMQP trigger adds to its JobTrigger's status."""

from pydantic import Field

from portico.domain.model import SpecModel


class AmqpStatus(SpecModel):
    amqp_queue: str | None = Field(default=None, description="AMQP: the queue being consumed.")
    connected: bool | None = Field(default=None, description="AMQP: whether the broker connection is up.")
    messages_rejected: int | None = Field(
        default=None, description="AMQP: messages rejected without requeue (dead-lettered if configured)."
    )
    messages_requeued: int | None = Field(
        default=None, description="AMQP: messages requeued because their job could not be created yet."
    )

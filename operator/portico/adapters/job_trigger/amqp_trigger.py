"""The seed's import path for RabbitMQTrigger; the code lives in `portico.sources.amqp`."""

from portico.sources.amqp import *  # noqa: F403
from portico.sources.amqp import __all__ as __all__

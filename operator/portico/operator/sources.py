"""The operator's instances of every source in the catalog, built from its settings (the webhook
server's address and limits)."""

from typing import Any

from portico.operator.settings import OperatorSettings
from portico.ports.trigger_source import TriggerSource
from portico.sources.amqp.trigger import AmqpSource
from portico.sources.database_poll.trigger import DatabasePollSource
from portico.sources.file.trigger import FileSource
from portico.sources.schedule import ScheduleSource
from portico.sources.webhook.trigger import WebhookSource


def create_sources(settings: OperatorSettings) -> dict[str, TriggerSource[Any]]:
    return {
        "schedule": ScheduleSource(),
        "webhook": WebhookSource(
            host=settings.webhook_host, port=settings.webhook_port, limits=settings.webhook_limits
        ),
        "file": FileSource(),
        "amqp": AmqpSource(),
        "databasePoll": DatabasePollSource(),
    }

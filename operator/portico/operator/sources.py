"""The one place that knows every kind of source: maps a spec block's key to its implementation."""

from typing import Any

from portico.adapters.job_trigger.amqp_trigger import AmqpSource
from portico.adapters.job_trigger.db_poll_trigger import DatabasePollSource
from portico.adapters.job_trigger.file_trigger import FileSource
from portico.adapters.job_trigger.schedule_trigger import ScheduleSource
from portico.adapters.job_trigger.webhook_trigger import WebhookSource
from portico.operator.settings import OperatorSettings
from portico.ports.trigger_source import TriggerSource

SOURCE_CLASSES: tuple[type[TriggerSource[Any]], ...] = (
    ScheduleSource,
    WebhookSource,
    FileSource,
    AmqpSource,
    DatabasePollSource,
)


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

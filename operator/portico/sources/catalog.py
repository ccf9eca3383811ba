"""Every kind of trigger source, in the order the CRD documents them: the one list the operator, the CRD
generator and `portico validate` read."""

from typing import Any

from portico.ports.trigger_source import TriggerSource
from portico.sources.amqp.trigger import AmqpSource
from portico.sources.database_poll.trigger import DatabasePollSource
from portico.sources.file.trigger import FileSource
from portico.sources.schedule import ScheduleSource
from portico.sources.webhook.trigger import WebhookSource

SOURCE_CLASSES: tuple[type[TriggerSource[Any]], ...] = (
    ScheduleSource,
    WebhookSource,
    FileSource,
    AmqpSource,
    DatabasePollSource,
)

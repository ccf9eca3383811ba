"""How a trigger reports what happens to it, without knowing about Kubernetes."""

import logging
from abc import ABC, abstractmethod
from typing import Literal

from portico.domain.trigger import TriggerRef

EventType = Literal["Normal", "Warning"]


class TriggerEvents(ABC):
    @abstractmethod
    def changed(self) -> None:
        """The trigger's health or source status changed. Cheap and non-blocking: called on every job;
        the listener coalesces."""

    @abstractmethod
    def event(self, type: EventType, reason: str, message: str) -> None:
        """Something a user should see (a Kubernetes Event in the operator). Non-blocking."""


class LoggingTriggerEvents(TriggerEvents):
    """The default for library use: events go to the log, changes are ignored."""

    def __init__(self, ref: TriggerRef | None = None) -> None:
        self._logger = logging.getLogger("portico.trigger")
        self._ref = ref

    def changed(self) -> None:
        pass

    def event(self, type: EventType, reason: str, message: str) -> None:
        level = logging.WARNING if type == "Warning" else logging.INFO
        self._logger.log(level, "%s: %s", reason, message, extra={"trigger": str(self._ref or "")})

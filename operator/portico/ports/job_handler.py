"""The port of the code that does the work: a `JobHandler` runs jobs of the types it names.

A handler says how an attempt ended by how `handle` returns: a value means done; `RetryLater` asks for
another attempt (optionally after a given delay); `PermanentFailure` says another attempt cannot help;
any other exception is treated as a transient failure and retried with the worker's backoff until the
job runs out of attempts.
"""

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from portico.ports.job_creator import Job

ANY_JOB_TYPE = "*"
"""In `job_types`: every job type no other handler names."""


class RetryLater(Exception):
    """Try this job again later: after `delay` seconds, or after the worker's backoff when None."""

    def __init__(self, reason: str = "retry requested by the handler", *, delay: float | None = None) -> None:
        if delay is not None and delay < 0:
            raise ValueError("delay must not be negative")
        super().__init__(reason)
        self.reason = reason
        self.delay = delay


class PermanentFailure(Exception):
    """This job cannot succeed (invalid payload, a resource that no longer exists): no further attempts."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JobHandler(ABC):
    job_types: Sequence[str] = ()
    """The job types this handler runs; `"*"` for every type no other handler names."""

    timeout_seconds: float | None = None
    """Longest an attempt may take; None: the worker's default. An attempt that runs out is retried."""

    @abstractmethod
    async def handle(self, job: Job) -> Any:
        """Do the work of one attempt and return its result (JSON-serialisable, or None).

        At-least-once: a job may be handled again after a crash or a lost lease, so effects should be
        idempotent (keyed by `job.id` or by `job.idempotency_key`).
        """


HandlerFunction = Callable[[Job], Awaitable[Any]]


class FunctionHandler(JobHandler):
    """A plain `async def handle(job)` function as a handler."""

    def __init__(
        self, job_types: Sequence[str], function: HandlerFunction, *, timeout_seconds: float | None = None
    ) -> None:
        if not job_types:
            raise ValueError("a handler needs at least one job type")
        self.job_types = tuple(job_types)
        self.timeout_seconds = timeout_seconds
        self._function = function

    async def handle(self, job: Job) -> Any:
        return await self._function(job)

    def __repr__(self) -> str:
        name = getattr(self._function, "__qualname__", repr(self._function))
        return f"FunctionHandler({list(self.job_types)!r}, {name})"


def handler(
    *job_types: str, timeout_seconds: float | None = None
) -> Callable[[HandlerFunction], FunctionHandler]:
    """Decorator: `@handler("report.daily")` above `async def make_report(job): ...` makes a handler."""

    def wrap(function: HandlerFunction) -> FunctionHandler:
        return FunctionHandler(job_types, function, timeout_seconds=timeout_seconds)

    return wrap

"""Which handler runs which job type, and finding handlers from an import path
(`portico worker --handlers myapp.jobs:handlers`)."""

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

from portico.ports.job_handler import ANY_JOB_TYPE, FunctionHandler, JobHandler

Handlers = JobHandler | Iterable[JobHandler] | Mapping[str, Any]
"""What a worker accepts: one handler, several, or a mapping of job type to handler or async function."""


class HandlerError(Exception):
    """The handlers given cannot be used (nothing importable there, a job type claimed twice, ...)."""


class HandlerTable:
    """Job type → handler, with `"*"` as the fallback for every type no handler names."""

    def __init__(self, handlers: Handlers) -> None:
        self._by_type: dict[str, JobHandler] = {}
        for job_handler in _as_handlers(handlers):
            if not job_handler.job_types:
                raise HandlerError(f"{job_handler!r} names no job types")
            for job_type in job_handler.job_types:
                if not isinstance(job_type, str) or not job_type:
                    raise HandlerError(f"{job_handler!r}: job types must be non-empty strings")
                other = self._by_type.get(job_type)
                if other is not None and other is not job_handler:
                    raise HandlerError(
                        f"job type {job_type!r} has two handlers: {other!r} and {job_handler!r}"
                    )
                self._by_type[job_type] = job_handler
        if not self._by_type:
            raise HandlerError("no handlers were given")
        self._fallback = self._by_type.get(ANY_JOB_TYPE)

    def find(self, job_type: str) -> JobHandler | None:
        return self._by_type.get(job_type, self._fallback)

    @property
    def job_types(self) -> list[str]:
        return sorted(self._by_type)


def _as_handlers(handlers: Handlers) -> list[JobHandler]:
    if isinstance(handlers, JobHandler):
        return [handlers]
    if isinstance(handlers, Mapping):
        found: list[JobHandler] = []
        for job_type, value in handlers.items():
            if isinstance(value, JobHandler):
                if job_type not in value.job_types:
                    raise HandlerError(f"{value!r} is mapped to {job_type!r} but does not name it")
                found.append(value)
            elif callable(value):
                found.append(FunctionHandler([job_type], value))
            else:
                raise HandlerError(f"the handler for {job_type!r} is neither a JobHandler nor a function")
        return found
    if isinstance(handlers, str | bytes):
        raise HandlerError("handlers must be JobHandler objects, not a string")
    try:
        items = list(handlers)
    except TypeError:
        raise HandlerError(f"{handlers!r} is not a handler, a list of handlers or a mapping") from None
    for item in items:
        if not isinstance(item, JobHandler):
            raise HandlerError(f"{item!r} is not a JobHandler")
    return items


def load_handlers(path: str) -> Handlers:
    """`module:attribute` → what it names. A callable that is not a handler (a factory) is called with
    no arguments and its result used."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise HandlerError(f"--handlers must look like package.module:attribute, not {path!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise HandlerError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise HandlerError(f"{module_name!r} has no attribute {attribute!r}") from None
    if callable(value) and not isinstance(value, JobHandler | Mapping) and not isinstance(value, type):
        try:
            value = value()
        except Exception as exc:
            raise HandlerError(f"{path} failed: {type(exc).__name__}: {exc}") from None
    if isinstance(value, type) and issubclass(value, JobHandler):
        value = value()
    result: Handlers = value
    return result

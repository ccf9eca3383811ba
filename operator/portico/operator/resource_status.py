"""The JobTrigger's status schema: the fields every trigger has, plus each source's own status model,
assembled the way the spec is assembled from the sources' spec models. A field missing here would be
pruned by the API server, so the CRD's status schema is generated from the assembled model."""

from copy import copy
from datetime import datetime
from functools import cache
from typing import Any, Literal

from pydantic import Field, create_model
from pydantic.fields import FieldInfo

from portico.domain.model import SpecModel
from portico.operator.resource import Phase
from portico.ports.trigger_source import TriggerSource


class Condition(SpecModel):
    type: str = Field(description="Type of the condition; `Ready` says whether the trigger creates jobs.")
    status: Literal["True", "False", "Unknown"] = Field(description="Status of the condition.")
    reason: str = Field(description="One-word CamelCase reason for the condition's last transition.")
    message: str = Field(default="", description="Human-readable details of the last transition.")
    last_transition_time: datetime = Field(description="When the condition last changed status.")
    observed_generation: int | None = Field(
        default=None, description="The spec generation the condition was computed from."
    )


class CommonStatus(SpecModel):
    """What the operator writes to `/status` of every trigger, whatever its source."""

    phase: Phase | None = Field(
        default=None,
        description="Pending (not started yet), Running, Suspended (spec.suspend) or Failed (see lastError).",
    )
    is_running: bool | None = Field(
        default=None, description="True exactly while the trigger can create jobs."
    )
    source: str | None = Field(
        default=None, description="Which source block is set (schedule, webhook, ...)."
    )
    target: str | None = Field(
        default=None, description="Which target receives the jobs (queueService, ...)."
    )
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation of the spec this status describes."
    )
    jobs_created: int | None = Field(default=None, description="Jobs created since the trigger was created.")
    errors: int | None = Field(default=None, description="Errors since the trigger was created.")
    last_job_id: str | None = Field(
        default=None, description="ID of the last job created in the queue service."
    )
    last_job_time: datetime | None = Field(default=None, description="When the last job was created.")
    last_error: str | None = Field(
        default=None, description="The last error, in words a user can act on (never contains secrets)."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Latest observations of the trigger's state (Ready)."
    )


class StatusModelError(TypeError):
    """Two status models disagree about a field: a programming error in a source."""


def _merge(name: str, first: FieldInfo, second: FieldInfo) -> FieldInfo:
    """A field two sources report (`connected`): one type, both descriptions."""
    if first.annotation != second.annotation:
        raise StatusModelError(
            f"status field {name!r} is {first.annotation} in one source, {second.annotation} in another"
        )
    description = " ".join(d for d in dict.fromkeys((first.description, second.description)) if d)
    merged = copy(first)
    merged.description = description
    return merged


@cache
def status_model(sources: tuple[type[TriggerSource[Any]], ...]) -> type[SpecModel]:
    """`JobTriggerStatus`: the common fields, each source's own, then the conditions. A source may not
    redefine a common field; a field several sources report must have the same type in each."""
    common = dict(CommonStatus.model_fields)
    conditions = common.pop("conditions")
    fields: dict[str, FieldInfo] = dict(common)
    for src in sources:
        for name, info in src.status_model.model_fields.items():
            if name in common or name == "conditions":
                raise StatusModelError(f"the {src.name} source's status redefines the common field {name!r}")
            fields[name] = _merge(name, fields[name], info) if name in fields else info
    fields["conditions"] = conditions
    model: type[SpecModel] = create_model(
        "JobTriggerStatus",
        __base__=SpecModel,
        **{name: (info.annotation, info) for name, info in fields.items()},  # type: ignore[call-overload]
    )
    model.__doc__ = (
        "Everything the operator writes to `/status`: the fields every trigger has and its source's own."
    )
    return model

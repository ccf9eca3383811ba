"""What a resource's status should say now, from what the operator holds for it and its trigger's
health: pure functions, so the status a user sees can be tested without a trigger or an API server.
The status writer decides when and how it is written."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

from portico.domain.timestamps import rfc3339
from portico.operator.managed import ManagedTrigger
from portico.ports.job_trigger import TriggerHealth


def json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return value


@dataclass(frozen=True)
class Readiness:
    """The Ready condition's status, reason and message."""

    status: str
    reason: str
    message: str

    @property
    def key(self) -> tuple[str, str]:
        """What a transition is: a change of status or reason (not of the message)."""
        return self.status, self.reason


@dataclass(frozen=True)
class SourceFields:
    """A source's own status fields, as JSON, and what is wrong with the ones left out."""

    values: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


@cache
def _declared(model: type[BaseModel]) -> frozenset[str]:
    """The camelCase keys a status model declares (read once per model, not per status write)."""
    return frozenset(info.alias or name for name, info in model.model_fields.items())


def source_fields(source_status: Mapping[str, Any], model: type[BaseModel]) -> SourceFields:
    """A trigger's `source_status`, checked against its source's status model. A key the model does not
    declare (the API server would prune it) or a value of the wrong type (it would reject the whole
    patch) is a programming error in the source: it is left out, and named in `problems` for the log."""
    declared = _declared(model)
    values = {k: json_value(v) for k, v in source_status.items()}
    problems = [f"{key}: not declared by {model.__name__}" for key in values if key not in declared]
    known = {k: v for k, v in values.items() if k in declared}
    try:
        model.model_validate(known)
    except ValidationError as exc:
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else ""
            known.pop(key, None)
            problems.append(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}")
    return SourceFields(known, tuple(problems))


def counters(managed: ManagedTrigger, health: TriggerHealth | None) -> tuple[int, int]:
    """Jobs created and errors counted by this process for the resource: earlier trigger instances
    (before a reconfigure) plus the current one. The status writer adds them to the totals."""
    live = managed.trigger is not None and health is not None
    jobs = managed.base_jobs + (health.jobs_created_count if live and health else 0)
    errors = managed.base_errors + managed.errors + (health.errors_count if live and health else 0)
    return jobs, errors


def readiness(managed: ManagedTrigger, health: TriggerHealth | None) -> Readiness:
    """Ready is True while the trigger runs; a trigger whose phase says Running but that cannot create
    jobs now (a broker outage) is `NotRunning`, with its last error."""
    if managed.phase == "Running" and not managed.running:
        message = (health.last_error if health else None) or "The trigger is not running."
        return Readiness("False", "NotRunning", message)
    return Readiness("True" if managed.phase == "Running" else "False", managed.reason, managed.message)


def follower_status(managed: ManagedTrigger, health: TriggerHealth | None) -> dict[str, Any]:
    """What a replica that is not the leader writes: only its own counts, for the triggers every
    replica serves (webhooks); phase, conditions and the rest are the leader's."""
    if managed.trigger is None or health is None:
        return {}
    jobs, errors = counters(managed, health)
    own: dict[str, Any] = {"jobsCreated": jobs, "errors": errors}
    if health.last_job_id:
        own["lastJobId"] = health.last_job_id
        own["lastJobTime"] = json_value(health.last_job_created)
    return own


def handed_over_status(
    managed: ManagedTrigger, health: TriggerHealth | None, own: SourceFields
) -> dict[str, Any]:
    """The last status a shard's previous owner writes: what it counted and scheduled (`own`, checked by
    `source_fields`), not a phase (the trigger keeps running, on the next owner, which resumes from
    this)."""
    if health is None:
        return {}
    jobs, errors = counters(managed, health)
    status: dict[str, Any] = {"jobsCreated": jobs, "errors": errors}
    if health.last_job_id:
        status["lastJobId"] = health.last_job_id
        status["lastJobTime"] = json_value(health.last_job_created)
    for key, value in own.values.items():
        if value is not None and key not in ("isRunning", "phase"):
            status[key] = value
    return status


def leader_status(
    managed: ManagedTrigger, health: TriggerHealth | None, ready: Readiness, own: SourceFields
) -> dict[str, Any]:
    """The status the resource should have now, as camelCase JSON: the common fields, the source's own
    (`own`, checked by `source_fields`), and the Ready condition."""
    jobs, errors = counters(managed, health)
    previous = managed.resource.status
    status: dict[str, Any] = {
        "phase": managed.phase,
        "isRunning": managed.running,
        "source": managed.source,
        "target": managed.target,
        "observedGeneration": managed.applied_generation,
        "jobsCreated": jobs,
        "errors": errors,
    }
    if health is not None:
        status["lastJobId"] = health.last_job_id or previous.get("lastJobId")
        status["lastJobTime"] = json_value(health.last_job_created) or previous.get("lastJobTime")
        status.update(own.values)
    status["lastError"] = managed.error or (health.last_error if health else None)
    status["conditions"] = [
        {
            "type": "Ready",
            "status": ready.status,
            "reason": ready.reason,
            "message": ready.message,
            "lastTransitionTime": rfc3339(managed.transition),
            "observedGeneration": managed.applied_generation,
        }
    ]
    return {k: v for k, v in status.items() if v is not None or k == "lastError"}

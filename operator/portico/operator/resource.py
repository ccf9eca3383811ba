"""The JobTrigger resource as the operator sees it: the object read from a watch event, the spec
(assembled from each source's own model), and the names that are part of the API. The status schema is
in `resource_status`."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, create_model

from portico.domain.model import SpecModel
from portico.domain.trigger import JobTemplate, TriggerRef
from portico.operator.targets import DEFAULT_TARGET, TARGET_CLASSES, exactly_one_target_rule, target_model
from portico.ports.trigger_source import TriggerSource

GROUP = "triggers.portico.dev"
VERSION = "v1alpha1"
KIND = "JobTrigger"
PLURAL = "jobtriggers"
RUN_NOW_ANNOTATION = f"{GROUP}/run-now"
FINALIZER = f"{GROUP}/finalizer"


def object_path(ref: TriggerRef) -> str:
    """The resource's path on the API server, as CloudEvents' `source` names it."""
    return f"/apis/{GROUP}/{VERSION}/namespaces/{ref.namespace}/{PLURAL}/{ref.name}"


Phase = Literal["Pending", "Running", "Suspended", "Failed"]


@dataclass(frozen=True)
class Resource:
    """What the operator needs of a JobTrigger object."""

    ref: TriggerRef
    generation: int
    spec: Mapping[str, Any]
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)
    resource_version: str | None = None
    finalizers: tuple[str, ...] = ()
    created_at: datetime | None = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "Resource":
        meta = body.get("metadata", {})
        return cls(
            ref=TriggerRef(name=meta["name"], namespace=meta.get("namespace", ""), uid=meta.get("uid", "")),
            generation=int(meta.get("generation", 0)),
            spec=dict(body.get("spec") or {}),
            annotations=dict(meta.get("annotations") or {}),
            labels=dict(meta.get("labels") or {}),
            status=dict(body.get("status") or {}),
            resource_version=meta.get("resourceVersion"),
            finalizers=tuple(meta.get("finalizers") or ()),
            created_at=_timestamp(meta.get("creationTimestamp")),
        )


def _timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp from the API server, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class SpecError(ValueError):
    """A spec the schema let through but that cannot run (a bad cron, an unknown time zone, ...).
    `errors` are `field.path: message` lines a user can act on."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = list(errors)


@dataclass(frozen=True)
class ParsedSpec:
    job: JobTemplate
    suspend: bool
    source: str
    source_spec: SpecModel
    target: str = DEFAULT_TARGET
    target_spec: SpecModel | None = None
    """None: the default target with an empty block (the operator's own queue service)."""


@cache
def spec_model(sources: tuple[type[TriggerSource[Any]], ...]) -> type[BaseModel]:
    """`JobTriggerSpec`, assembled from the sources' own models: one optional block per source."""
    fields: dict[str, Any] = {
        "suspend": (
            bool,
            Field(
                default=False,
                description=(
                    "Stop the trigger without deleting it. Runs missed while suspended are not caught up."
                ),
            ),
        ),
        "job": (JobTemplate, Field(description="Template of every job this trigger creates.")),
        "target": (
            target_model(TARGET_CLASSES) | None,
            Field(
                default=None,
                description=(
                    "Where the jobs go: exactly one target block. Omitted: the operator's own queue "
                    "service (--queue-url), as queueService: {} would."
                ),
            ),
        ),
    }
    for src in sources:
        doc = (src.spec_model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        fields[src.name] = (
            src.spec_model | None,
            Field(default=None, description=doc or f"{src.name} source."),
        )
    model: type[BaseModel] = create_model("JobTriggerSpec", __base__=SpecModel, **fields)
    model.__doc__ = "Desired state of a JobTrigger: the job template and exactly one event source."
    return model


def exactly_one_source_rule(names: Sequence[str]) -> dict[str, str]:
    has = ", ".join(f"has(self.{n})" for n in names)
    return {
        "rule": f"[{has}].filter(x, x).size() == 1",
        "message": f"exactly one source block must be set: {', '.join(names)}",
    }


def format_validation_error(exc: ValidationError, prefix: str = "spec") -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{loc}: {msg}")
    return out


def parse_spec(spec: Mapping[str, Any], sources: Sequence[type[TriggerSource[Any]]]) -> ParsedSpec:
    """Validate a resource's spec with the same models the CRD is generated from, plus the deep checks
    (cron, time zone, JSON Schema, ...) the API server cannot do. Raises `SpecError`."""
    model = spec_model(tuple(sources))
    try:
        parsed = model.model_validate(dict(spec))
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc)) from None
    names = [s.name for s in sources]
    present = [name for name in names if getattr(parsed, name, None) is not None]
    if len(present) != 1:
        raise SpecError([f"spec: {exactly_one_source_rule(names)['message']} (found {len(present)})"])
    job: JobTemplate = parsed.job  # type: ignore[attr-defined]
    suspend: bool = parsed.suspend  # type: ignore[attr-defined]
    target, target_spec = _target(parsed.target)  # type: ignore[attr-defined]
    return ParsedSpec(
        job=job,
        suspend=suspend,
        source=present[0],
        source_spec=getattr(parsed, present[0]),
        target=target,
        target_spec=target_spec,
    )


def _target(block: BaseModel | None) -> tuple[str, SpecModel | None]:
    if block is None:
        return DEFAULT_TARGET, None
    names = [t.name for t in TARGET_CLASSES]
    present = [name for name in names if getattr(block, name, None) is not None]
    if len(present) != 1:
        message = str(exactly_one_target_rule(names)["message"])
        raise SpecError([f"spec.target: {message} (found {len(present)})"])
    spec: SpecModel = getattr(block, present[0])
    return present[0], spec

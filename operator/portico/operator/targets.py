"""The one place that knows every kind of target: maps a `spec.target` block's key to its
implementation, and assembles the `spec.target` model from the targets' own models."""

from collections.abc import Sequence
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, create_model

from portico.adapters.job_creator.celery_task import CeleryTarget
from portico.adapters.job_creator.cloud_events import CloudEventsTarget
from portico.adapters.job_creator.kubernetes_job import KubernetesJobTarget
from portico.adapters.job_creator.queue_service import QueueServiceTarget
from portico.domain.model import SpecModel
from portico.ports.job_target import JobTarget

TARGET_CLASSES: tuple[type[JobTarget[Any]], ...] = (
    QueueServiceTarget,
    KubernetesJobTarget,
    CeleryTarget,
    CloudEventsTarget,
)
DEFAULT_TARGET = QueueServiceTarget.name


def create_targets(default_queue_url: str | None = None, api: Any = None) -> dict[str, JobTarget[Any]]:
    """`api`: the operator's Kubernetes `ApiClient`, for the kubernetesJob target."""
    return {
        QueueServiceTarget.name: QueueServiceTarget(default_queue_url),
        KubernetesJobTarget.name: KubernetesJobTarget(api),
        CeleryTarget.name: CeleryTarget(),
        CloudEventsTarget.name: CloudEventsTarget(),
    }


def exactly_one_target_rule(names: Sequence[str]) -> dict[str, JsonValue]:
    has = ", ".join(f"has(self.{n})" for n in names)
    return {
        "rule": f"[{has}].filter(x, x).size() == 1",
        "message": f"exactly one target block must be set: {', '.join(names)}",
    }


@cache
def target_model(targets: tuple[type[JobTarget[Any]], ...] = TARGET_CLASSES) -> type[BaseModel]:
    """`JobTriggerTarget`: one optional block per target, exactly one set (a CEL rule in the CRD, and
    the same check in `parse_spec`)."""
    fields: dict[str, Any] = {}
    for target in targets:
        doc = " ".join((target.spec_model.__doc__ or "").strip().split("\n\n")[0].split())
        fields[target.name] = (target.spec_model | None, Field(default=None, description=doc))
    rule = exactly_one_target_rule([t.name for t in targets])
    base = type(
        "TargetBase",
        (SpecModel,),
        {"model_config": ConfigDict(json_schema_extra={"x-kubernetes-validations": [rule]})},
    )
    model: type[BaseModel] = create_model("JobTriggerTarget", __base__=base, **fields)
    model.__doc__ = "Where the jobs go: exactly one block."
    return model

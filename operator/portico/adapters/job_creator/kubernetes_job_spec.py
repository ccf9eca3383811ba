"""The `kubernetesJob` target's spec block: a CronJob-like `jobTemplate` and the options around it. The
parts of the Job and Pod spec the operator does not need are kept as written (the API server validates
them when the Job is created); what it needs (at least one container) is required here."""

from typing import Any

from pydantic import ConfigDict, Field

from portico.domain.model import SpecModel


class _Open(SpecModel):
    """Kubernetes fields the operator does not need to know are kept as written; the API server
    validates them when the Job is created."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})


class TemplateMetadata(SpecModel):
    """Labels and annotations."""

    labels: dict[str, str] = Field(default_factory=dict, description="Labels to set.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations to set.")


class PodSpecTemplate(_Open):
    """The Pod's spec (core/v1 PodSpec): containers, volumes, serviceAccountName, restartPolicy, ...
    Every PodSpec field is accepted."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-validations": [
                {
                    "rule": "size(self.containers) > 0",
                    "message": "the Job template needs at least one container",
                }
            ],
        }
    )

    containers: list[dict[str, Any]] = Field(
        min_length=1, description="The Pod's containers (core/v1 Container); at least one."
    )
    restart_policy: str = Field(
        default="Never", description="Never (the default here, as for most Jobs) or OnFailure."
    )


class PodTemplate(_Open):
    """The Pod template of the Job (core/v1 PodTemplateSpec)."""

    metadata: TemplateMetadata | None = Field(default=None, description="Labels and annotations of the Pods.")
    spec: PodSpecTemplate = Field(description="The Pod's spec.")


class JobSpecTemplate(_Open):
    """The Job's spec (batch/v1 JobSpec): template, backoffLimit, activeDeadlineSeconds, parallelism,
    ... Every JobSpec field is accepted."""

    template: PodTemplate = Field(description="The Pod template.")


class JobTemplateSpec(SpecModel):
    """The Job to create, as in a CronJob's `jobTemplate`."""

    metadata: TemplateMetadata | None = Field(default=None, description="Labels and annotations of the Jobs.")
    spec: JobSpecTemplate = Field(description="The Job's spec (batch/v1 JobSpec).")


class KubernetesJobTargetSpec(SpecModel):
    """Run every job as a Kubernetes Job (batch/v1) in the trigger's namespace, made from jobTemplate as
    a CronJob's. The Job's name is derived from the job's idempotency key, so a retry never makes a
    second Job."""

    job_template: JobTemplateSpec = Field(description="The Job to create for every job, as in a CronJob.")
    payload_env: bool = Field(
        default=True,
        description="Give every container PORTICO_JOB_TYPE, PORTICO_JOB_PAYLOAD (JSON), PORTICO_JOB_METADATA "
        "(JSON), PORTICO_JOB_QUEUE, PORTICO_JOB_PRIORITY, PORTICO_JOB_NAME and PORTICO_IDEMPOTENCY_KEY.",
    )
    payload_file: bool = Field(
        default=True,
        description="Mount the job as JSON at /etc/portico/job.json in every container (from the Pod's "
        "triggers.portico.dev/job annotation, through the downward API; at most about 250 KiB).",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete each Job this many seconds after it finished."
    )
    successful_jobs_history_limit: int | None = Field(
        default=None,
        ge=0,
        description="Keep at most this many succeeded Jobs of this trigger; older ones are deleted.",
    )
    failed_jobs_history_limit: int | None = Field(
        default=None,
        ge=0,
        description="Keep at most this many failed Jobs of this trigger; older ones are deleted.",
    )

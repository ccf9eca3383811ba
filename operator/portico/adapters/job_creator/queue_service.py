"""The `queueService` target: jobs go to a queue service over HTTP (`HttpJobCreator`).

Without a block of its own (or with an empty one) a trigger shares the operator's creator, the queue
service named by `--queue-url`, exactly as before targets existed. A trigger may name its own service
and its own token Secret; a trigger's own URL never receives the operator's token. Its requests count in
the operator's `portico_queue_request*` metrics.
"""

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from portico.adapters.job_creator.http import HttpJobCreator
from portico.domain.model import SpecModel
from portico.domain.trigger import SecretRef
from portico.ports.job_creator import JobCreator
from portico.ports.job_target import JobTarget, TargetContext
from portico.ports.job_trigger import TriggerStartError


class QueueServiceTargetSpec(SpecModel):
    """Send the jobs to a queue service (the default target). Empty: the operator's own queue service
    (`--queue-url`, with the operator's token)."""

    url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
        description="Base URL of this trigger's queue service (http or https), instead of the operator's "
        "`--queue-url`. The operator's token is never sent to it; set tokenSecretRef if it needs one.",
    )
    token_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret key holding the bearer token for the queue service. Without url, the token "
        "is sent to the operator's queue service instead of the operator's own token.",
    )


class QueueServiceTarget(JobTarget[QueueServiceTargetSpec]):
    name: ClassVar[str] = "queueService"
    spec_model: ClassVar[type[SpecModel]] = QueueServiceTargetSpec

    def __init__(self, default_url: str | None = None) -> None:
        self.default_url = default_url

    def secret_refs(self, spec: QueueServiceTargetSpec) -> Sequence[SecretRef]:
        return (spec.token_secret_ref,) if spec.token_secret_ref else ()

    def build(self, spec: QueueServiceTargetSpec, context: TargetContext) -> JobCreator:
        if spec.url is None and spec.token_secret_ref is None:
            return context.shared
        url = spec.url or self.default_url
        if url is None:
            raise TriggerStartError(
                "spec.target.queueService.url is required: the operator has no default queue service URL",
                reason="InvalidTarget",
                retryable=False,
            )
        token = context.secrets.get(spec.token_secret_ref) if spec.token_secret_ref else None
        shared = context.shared if type(context.shared) is HttpJobCreator else None
        try:
            return HttpJobCreator(url, token=token, metrics_of=shared)
        except ValueError as exc:
            raise TriggerStartError(
                f"spec.target.queueService.url: {exc}", reason="InvalidTarget", retryable=False
            ) from None

"""What every trigger shares, whatever its source: who it is and the job it creates."""

from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from portico.domain.input_policy import check_identifier, check_json
from portico.domain.model import SpecModel

PRIORITY_MIN = -1000
PRIORITY_MAX = 1000


@dataclass(frozen=True)
class TriggerRef:
    """Identity of a trigger: the JobTrigger resource it came from, or a name chosen by a library user."""

    name: str
    namespace: str = ""
    uid: str = ""

    @property
    def key(self) -> str:
        """Stable key for idempotency: the resource UID when there is one (it survives renames of nothing
        and changes on delete/recreate), else namespace/name."""
        return self.uid or f"{self.namespace}/{self.name}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


class JobTemplate(SpecModel):
    """The job every fire of a trigger creates (`spec.job`); sources may override parts of it."""

    type: str = Field(min_length=1, max_length=253, description="Job type handed to the queue service.")
    queue: str = Field(default="default", min_length=1, max_length=253, description="Queue name.")
    priority: int = Field(default=0, ge=PRIORITY_MIN, le=PRIORITY_MAX, description="Higher runs first.")
    payload: dict[str, Any] = Field(default_factory=dict, description="Free JSON payload of every job.")
    metadata: dict[str, str] = Field(default_factory=dict, description="String labels attached to every job.")

    @field_validator("type", "queue")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return check_identifier(value, "identifier")

    @field_validator("payload", "metadata")
    @classmethod
    def _within_input_policy(cls, value: dict[str, Any]) -> dict[str, Any]:
        """The same policy as every entry point (bounded nesting, finite numbers, 64-bit integers, valid
        Unicode), so a manifest cannot carry a job the queue service would refuse."""
        check_json(value)
        return value


class SecretRef(SpecModel):
    """A key of a Secret in the trigger's namespace. Secret values are never inlined in a spec."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")
    key: str = Field(min_length=1, max_length=253, description="Key within the Secret's data.")

    def __str__(self) -> str:
        return f"Secret {self.name!r} key {self.key!r}"

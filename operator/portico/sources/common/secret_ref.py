"""A source whose connection string is a secret (a broker URL, a DSN): a JobTrigger names the Secret that
holds it, library use passes the value itself. The spec model therefore lets the reference be absent in
Python, while the CRD requires it and the operator refuses a spec without it."""

from collections.abc import Callable, Sequence
from typing import Any

from portico.domain.trigger import SecretRef
from portico.ports.job_trigger import TriggerStartError


def required_in_manifests(field: str, rules: Sequence[dict[str, str]]) -> Callable[[dict[str, Any]], None]:
    """A `json_schema_extra` that makes `field` required in the CRD and adds the CEL `rules`."""

    def amend(schema: dict[str, Any]) -> None:
        schema["required"] = [field, *(name for name in schema.get("required", []) if name != field)]
        schema["x-kubernetes-validations"] = list(rules)

    return amend


def require(ref: SecretRef | None, path: str, what: str) -> SecretRef:
    """The reference of a spec the operator builds from; a clear, non-retryable error without one."""
    if ref is None:
        raise TriggerStartError(f"{path} is required: {what}", reason="InvalidSpec", retryable=False)
    return ref

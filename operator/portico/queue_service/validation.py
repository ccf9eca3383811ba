"""Parsing and checking request bodies and parameters. Every rejection names the field at fault, and the
limits here are the ones `openapi.py` publishes."""

import math
import re
from dataclasses import dataclass
from typing import Any

from portico.domain.input_policy import ENVELOPE_DEPTH, PolicyViolation, check_identifier
from portico.domain.input_policy import parse_json as parse_policy_json
from portico.queue_service.store import STATUSES

QUEUE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$"
"""Visible ASCII (inner spaces allowed), 1 to 255 characters: what survives every HTTP stack unchanged.
The patterns are published as ECMA-262 regexes (OpenAPI), where `$` ends the text; here they are applied
with `fullmatch`, since Python's `$` would also accept a trailing newline."""
IDENTIFIER_PATTERN = r"^[^\u0000-\u001f\u007f]*$"
"""Job types and worker names hold no control characters (the input policy's identifier rule)."""
MAX_JOB_TYPE_LENGTH = 255
MAX_TEXT_LENGTH = 255
MAX_ERROR_LENGTH = 4096
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
MAX_ATTEMPTS_RANGE = (1, 1000)
LEASE_SECONDS_RANGE = (1, 86400)
MAX_RETRY_DELAY = 86400
CLAIM_LIMIT_RANGE = (1, 100)
LIST_LIMIT_RANGE = (1, 1000)
DEFAULT_LIST_LIMIT = 100

_queue_name = re.compile(QUEUE_NAME_PATTERN)
_idempotency_key = re.compile(IDEMPOTENCY_KEY_PATTERN)
CURSOR_PATTERN = r"^[0-9]{1,18}$"
"""A position in creation order: any such value is a valid place to continue from."""
_cursor = re.compile(CURSOR_PATTERN)
METADATA_FILTER_PATTERN = r"^[A-Za-z0-9._/-]{1,253}=.{0,1024}$"
"""`metadata=KEY=VALUE` on the job list: jobs whose metadata maps KEY to exactly VALUE."""
_metadata_filter = re.compile(METADATA_FILTER_PATTERN, re.DOTALL)


class RequestError(Exception):
    """A rejected request: HTTP 400 naming `field` and, for input-policy violations, the `rule`."""

    def __init__(self, field: str, message: str, *, rule: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.rule = rule

    @classmethod
    def from_violation(cls, violation: PolicyViolation) -> "RequestError":
        """`field` as this API has always named fields (`payload.a[0]`, `body` for the whole body)."""
        path = violation.path
        field = path[2:] if path.startswith("$.") else "body" + path[1:] if path.startswith("$") else path
        return cls(field, str(violation), rule=violation.rule)


@dataclass(frozen=True, slots=True)
class CreateJob:
    job_type: str
    queue_name: str
    priority: int
    payload: dict[str, Any]
    metadata: dict[str, str]
    max_attempts: int


@dataclass(frozen=True, slots=True)
class Claim:
    worker: str | None
    lease_seconds: float
    limit: int


@dataclass(frozen=True, slots=True)
class Complete:
    lease_id: str


@dataclass(frozen=True, slots=True)
class Extend:
    lease_id: str
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class Fail:
    lease_id: str
    error: str | None
    retry: bool
    retry_delay: float


@dataclass(frozen=True, slots=True)
class ListQuery:
    queue_name: str | None
    status: str | None
    job_type: str | None
    after: int
    limit: int
    metadata: tuple[str, str] | None = None


def parse_json(body: bytes) -> Any:
    """The body under the input policy (`portico.domain.input_policy`): strict UTF-8 JSON, bounded
    nesting, finite numbers, 64-bit integers, valid Unicode; a refusal names the rule and the path."""
    if not body:
        raise RequestError("body", "the request body is empty; a JSON object is required")
    try:
        return parse_policy_json(body, max_depth=ENVELOPE_DEPTH)
    except PolicyViolation as exc:
        raise RequestError.from_violation(exc) from None


def _object(data: Any, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise RequestError("body", "the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise RequestError(unknown[0], f"unknown field {unknown[0]!r}")
    return data


def _text(value: Any, field: str, *, max_length: int, min_length: int = 1, identifier: bool = True) -> str:
    """A text field; `identifier` (the default) also refuses control characters."""
    if not isinstance(value, str):
        raise RequestError(field, f"{field} must be a string")
    if not min_length <= len(value) <= max_length:
        raise RequestError(field, f"{field} must be {min_length} to {max_length} characters long")
    try:
        return check_identifier(value, field) if identifier else value
    except PolicyViolation as exc:
        raise RequestError.from_violation(exc) from None


def _integer(value: Any, field: str, bounds: tuple[int, int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(field, f"{field} must be an integer")
    if isinstance(value, float) and not value.is_integer():
        raise RequestError(field, f"{field} must be an integer")
    number = int(value)
    low, high = bounds
    if not low <= number <= high:
        raise RequestError(field, f"{field} must be between {low} and {high}")
    return number


def _number(value: Any, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(field, f"{field} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError(field, f"{field} must be a finite number")
    if not low <= value <= high:
        raise RequestError(field, f"{field} must be between {low:g} and {high:g}")
    return float(value)


def _boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise RequestError(field, f"{field} must be true or false")
    return value


def check_queue_name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _queue_name.fullmatch(value):
        raise RequestError(
            field,
            f"{field} must be 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter/digit",
        )
    return value


def check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _idempotency_key.fullmatch(value):
        raise RequestError("Idempotency-Key", "Idempotency-Key must be 1 to 255 visible ASCII characters")
    return value


_CREATE_FIELDS = frozenset({"job_type", "queue_name", "priority", "payload", "metadata", "max_attempts"})


def parse_create(data: Any, *, default_max_attempts: int) -> CreateJob:
    body = _object(data, _CREATE_FIELDS)
    if "job_type" not in body:
        raise RequestError("job_type", "job_type is required")
    payload = body.get("payload", {})
    if not isinstance(payload, dict):
        raise RequestError("payload", "payload must be a JSON object")
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict):
        raise RequestError("metadata", "metadata must be an object of strings")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise RequestError(f"metadata.{key}", "metadata values must be strings")
    return CreateJob(
        job_type=_text(body["job_type"], "job_type", max_length=MAX_JOB_TYPE_LENGTH),
        queue_name=check_queue_name(body.get("queue_name", "default"), "queue_name"),
        priority=_integer(body.get("priority", 0), "priority", PRIORITY_RANGE),
        payload=payload,
        metadata=metadata,
        max_attempts=_integer(
            body.get("max_attempts", default_max_attempts), "max_attempts", MAX_ATTEMPTS_RANGE
        ),
    )


def parse_claim(data: Any, *, default_lease_seconds: float) -> Claim:
    body = _object(data, frozenset({"worker", "lease_seconds", "limit"}))
    worker = body.get("worker")
    return Claim(
        worker=None if worker is None else _text(worker, "worker", max_length=MAX_TEXT_LENGTH),
        lease_seconds=_number(
            body.get("lease_seconds", default_lease_seconds), "lease_seconds", *LEASE_SECONDS_RANGE
        ),
        limit=_integer(body.get("limit", 1), "limit", CLAIM_LIMIT_RANGE),
    )


def _lease_id(body: dict[str, Any]) -> str:
    """Required: without it a worker whose lease expired could overwrite the result of the worker that
    claimed the job after it."""
    if body.get("lease_id") is None:
        raise RequestError(
            "lease_id", "lease_id is required: the lease_id of the claim that returned the job"
        )
    return _text(body["lease_id"], "lease_id", max_length=MAX_TEXT_LENGTH, identifier=False)


def parse_complete(data: Any) -> Complete:
    body = _object(data, frozenset({"lease_id"}))
    return Complete(lease_id=_lease_id(body))


def parse_extend(data: Any) -> Extend:
    body = _object(data, frozenset({"lease_id", "lease_seconds"}))
    return Extend(
        lease_id=_lease_id(body),
        lease_seconds=_number(body.get("lease_seconds"), "lease_seconds", *LEASE_SECONDS_RANGE),
    )


def parse_fail(data: Any) -> Fail:
    body = _object(data, frozenset({"lease_id", "error", "retry", "retry_delay_seconds"}))
    error = body.get("error")
    return Fail(
        lease_id=_lease_id(body),
        error=None
        if error is None
        else _text(error, "error", max_length=MAX_ERROR_LENGTH, min_length=0, identifier=False),
        retry=_boolean(body.get("retry", True), "retry"),
        retry_delay=_number(body.get("retry_delay_seconds", 0), "retry_delay_seconds", 0, MAX_RETRY_DELAY),
    )


def encode_cursor(seq: int) -> str:
    return str(seq)


def _decode_cursor(cursor: str) -> int:
    if not _cursor.fullmatch(cursor):
        raise RequestError("cursor", "cursor must be the next_cursor of a previous page")
    return int(cursor)


def _key_value(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key, value


def parse_list_query(query: dict[str, str]) -> ListQuery:
    status = query.get("status")
    if status is not None and status not in STATUSES:
        raise RequestError("status", f"status must be one of {', '.join(STATUSES)}")
    queue_name = query.get("queue")
    job_type = query.get("job_type")
    limit_text = query.get("limit")
    limit = DEFAULT_LIST_LIMIT
    if limit_text is not None:
        try:
            limit = int(limit_text)
        except ValueError:
            raise RequestError("limit", "limit must be an integer") from None
        if not LIST_LIMIT_RANGE[0] <= limit <= LIST_LIMIT_RANGE[1]:
            raise RequestError(
                "limit", f"limit must be between {LIST_LIMIT_RANGE[0]} and {LIST_LIMIT_RANGE[1]}"
            )
    cursor = query.get("cursor")
    metadata = query.get("metadata")
    if metadata is not None and not _metadata_filter.fullmatch(metadata):
        raise RequestError(
            "metadata", "metadata must be KEY=VALUE (KEY: letters, digits, '.', '_', '/', '-')"
        )
    return ListQuery(
        queue_name=None if queue_name is None else _text(queue_name, "queue", max_length=MAX_TEXT_LENGTH),
        status=status,
        job_type=None if job_type is None else _text(job_type, "job_type", max_length=MAX_JOB_TYPE_LENGTH),
        after=0 if cursor is None else _decode_cursor(cursor),
        limit=limit,
        metadata=None if metadata is None else _key_value(metadata),
    )

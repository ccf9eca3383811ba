"""From an accepted request to the fields of a job: the request-mode body, where each sender puts its
delivery id and event type, and what of the request is recorded in the job's metadata. Pure functions
over headers and a parsed body; the pipeline decides what to answer."""

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from portico.domain.input_policy import check_identifier
from portico.domain.trigger import PRIORITY_MAX, PRIORITY_MIN, JobTemplate
from portico.sources.webhook.spec import WebhookSpec

MAX_DELIVERY_ID_LENGTH = 200
MAX_METADATA_VALUE_LENGTH = 1024


class WebhookJobRequest(BaseModel):
    """The request-mode body (the seed's): which job to create. Unset fields come from the trigger's
    template, else queue `default` and priority 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_type: str = Field(min_length=1, max_length=253)
    payload: dict[str, Any] = Field(default_factory=dict)
    queue_name: str | None = Field(default=None, min_length=1, max_length=253)
    priority: int | None = Field(default=None, ge=PRIORITY_MIN, le=PRIORITY_MAX)

    @field_validator("job_type", "queue_name")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value, "identifier")


def validation_message(exc: ValidationError) -> str:
    """Pydantic's errors without the offending input values."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        location = ".".join(str(part) for part in error["loc"]) or "body"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


@dataclass(frozen=True)
class SenderConvention:
    """Where a sender puts its delivery id and event type."""

    delivery_header: str | None = None
    event_header: str | None = None
    delivery_from_body: Callable[[dict[str, Any]], object] | None = None
    event_from_body: Callable[[dict[str, Any]], object] | None = None


def _slack_event_type(body: dict[str, Any]) -> object:
    event = body.get("event")
    if isinstance(event, dict) and isinstance(event.get("type"), str):
        return event["type"]
    return body.get("type")


SENDERS: dict[str, SenderConvention] = {
    "github": SenderConvention(delivery_header="X-GitHub-Delivery", event_header="X-GitHub-Event"),
    "stripe": SenderConvention(
        delivery_from_body=lambda b: b.get("id"), event_from_body=lambda b: b.get("type")
    ),
    "slack": SenderConvention(
        delivery_from_body=lambda b: b.get("event_id"), event_from_body=_slack_event_type
    ),
}
NO_CONVENTION = SenderConvention()


class BadDeliveryId(ValueError):
    def __init__(self) -> None:
        super().__init__(f"the delivery id must be 1 to {MAX_DELIVERY_ID_LENGTH} visible ASCII characters")


_DELIVERY_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_DELIVERY_ID_LENGTH}}}")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def metadata_text(value: str) -> str:
    """A header value as metadata: bounded, valid Unicode even when the header's bytes were not, and
    without control characters."""
    text = value[:MAX_METADATA_VALUE_LENGTH].encode("utf-8", "replace").decode("utf-8")
    return _CONTROL_CHARACTERS.sub(" ", text)


@dataclass(frozen=True)
class JobMapping:
    """The spec's rules for turning one request into one job."""

    spec: WebhookSpec
    template: JobTemplate | None
    sender: SenderConvention

    @classmethod
    def of(cls, spec: WebhookSpec, template: JobTemplate | None) -> "JobMapping":
        if spec.mode == "payload" and template is None and spec.job_type_from_header is None:
            raise ValueError(
                "payload mode needs a job template (template=JobTemplate(type=...)) or job_type_from_header"
            )
        return cls(spec, template, SENDERS.get(spec.auth.preset or "", NO_CONVENTION))

    def allowed_job_types(self) -> frozenset[str] | None:
        """None: any job type. Request mode without a list allows only the template's type."""
        if self.spec.allowed_job_types:
            return frozenset(self.spec.allowed_job_types)
        if self.spec.mode == "request" and self.template is not None:
            return frozenset({self.template.type})
        return None

    def job_type_for(self, headers: Mapping[str, str]) -> str | None:
        """Payload mode: the job type, or None when the event is to be ignored."""
        by_header = self.spec.job_type_from_header
        if by_header is None:
            return self.template.type if self.template else None
        value = headers.get(by_header.header)
        if value is not None and value in by_header.mapping:
            return by_header.mapping[value]
        if by_header.unmapped == "template" and self.template is not None:
            return self.template.type
        return None

    def delivery_id(self, headers: Mapping[str, str], document: dict[str, Any] | None) -> str | None:
        """The sender's id of this delivery, the same on its retries. Raises BadDeliveryId."""
        candidates: list[object] = [headers.get("Idempotency-Key")]
        if self.spec.delivery_id_header:
            candidates.append(headers.get(self.spec.delivery_id_header))
        if self.sender.delivery_header:
            candidates.append(headers.get(self.sender.delivery_header))
        if document is not None and self.sender.delivery_from_body is not None:
            candidates.append(self.sender.delivery_from_body(document))
        for candidate in candidates:
            if isinstance(candidate, str) and candidate:
                if not _DELIVERY_ID.fullmatch(candidate):
                    raise BadDeliveryId
                return candidate
        return None

    def event_type(self, headers: Mapping[str, str], document: dict[str, Any]) -> str | None:
        event: object = None
        if self.sender.event_header:
            event = headers.get(self.sender.event_header)
        elif self.sender.event_from_body is not None:
            event = self.sender.event_from_body(document)
        return metadata_text(event) if isinstance(event, str) else None

    def metadata(
        self, headers: Mapping[str, str], delivery_id: str | None, *, event: str | None
    ) -> dict[str, str]:
        metadata: dict[str, str] = {}
        if delivery_id is not None:
            metadata["webhook.deliveryId"] = delivery_id
        if event is not None:
            metadata["webhook.event"] = event
        for name in self.spec.record_headers:
            value = headers.get(name)
            if value is not None:
                metadata[f"webhook.header.{name.lower()}"] = metadata_text(value)
        return metadata

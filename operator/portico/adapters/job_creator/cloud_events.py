"""The `cloudEvents` target: every job becomes a CloudEvent POSTed to a sink in binary content mode.

The event is the job: `ce-id` is the job's idempotency key (made header-safe), `ce-source` the
JobTrigger's API path, `ce-type` the job type, the body the payload as JSON; the queue name, priority
and metadata travel as the extension attributes `queue`, `priority` and `jobmetadata`. A retry, a
redelivery or a restart sends the same `ce-source` + `ce-id`, which CloudEvents defines as the same
event, so consumers (Knative, Argo Events, any sink) can drop duplicates. Within one creator's life a
key the sink already accepted is not sent again at all: the job comes back with `existing` set, so
redeliveries are neither re-sent nor counted twice.

Retries are `HttpJobCreator`'s (connection errors, 5xx and 429, exponential backoff with full jitter,
`Retry-After`, one deadline); any 2xx means the sink accepted the event.
"""

import hashlib
import hmac
import json
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import Field
from yarl import URL

from portico.adapters.job_creator.http import HttpJobCreator, header_safe_idempotency_key
from portico.domain.model import SpecModel
from portico.domain.trigger import SecretRef
from portico.ports.job_creator import Job, JobCreationError, JobCreator
from portico.ports.job_target import JobTarget, TargetContext
from portico.ports.job_trigger import TriggerStartError

SIGNATURE_HEADER = "Portico-Signature"
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def header_value(value: str) -> str:
    """An attribute value as the HTTP binding wants it: `"`, `%`, spaces and anything outside visible
    ASCII percent-encoded (UTF-8)."""
    return quote(value, safe=_HEADER_SAFE)


_strict_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def signature(key: bytes, event_id: str, event_time: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `<ce-id>.<ce-time>.<body>`: binding the id and time to the
    body means a captured request cannot be replayed as another event."""
    message = f"{event_id}.{event_time}.".encode() + body
    return "sha256=" + hmac.new(key, message, hashlib.sha256).hexdigest()


class CloudEventsJobCreator(HttpJobCreator):
    """A `JobCreator` that POSTs each job as a CloudEvent (binary content mode) to `sink_url`. A sink
    keeps no jobs to read back, so `get_job` returns None."""

    peer: ClassVar[str] = "CloudEvents sink"

    def __init__(
        self,
        sink_url: str,
        *,
        source: str,
        token: str | None = None,
        hmac_key: str | None = None,
        remember: int = 10_000,
        **options: Any,
    ) -> None:
        super().__init__(sink_url, token=token, **options)
        if not source:
            raise ValueError("the CloudEvents source must not be empty")
        self.source = source
        self._hmac_key = hmac_key.encode() if hmac_key else None
        self._sink = URL(self._base, encoded=True)
        self._remember = remember
        self._accepted: OrderedDict[str, Job] = OrderedDict()
        """The last `remember` events the sink accepted, by idempotency key."""

    def _redact(self, message: str) -> str:
        message = super()._redact(message)
        if self._hmac_key:
            message = message.replace(self._hmac_key.decode(), "<key>")
        return message

    async def create_job(
        self,
        job_type: str,
        payload: dict[str, Any],
        queue_name: str = "default",
        priority: int = 0,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        metadata, idempotency_key = self.with_context(metadata, idempotency_key)
        what = f"sending a {job_type!r} event"
        try:
            body = _strict_json.encode(payload).encode()
            extension = json.dumps(metadata or {}, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise JobCreationError(f"{what}: the payload is not valid JSON: {exc}", retryable=False) from None
        if idempotency_key is not None and (known := self._accepted.get(idempotency_key)) is not None:
            self._accepted.move_to_end(idempotency_key)
            return known.model_copy(update={"existing": True})
        event_id = (
            header_safe_idempotency_key(idempotency_key) if idempotency_key is not None else str(uuid.uuid4())
        )
        now = datetime.now(UTC)
        event_time = now.isoformat(timespec="microseconds").replace("+00:00", "Z")
        attributes = {
            "specversion": "1.0",
            "id": event_id,
            "source": self.source,
            "type": job_type,
            "time": event_time,
            "queue": queue_name,
            "priority": str(priority),
            "jobmetadata": extension,
        }
        headers = {f"ce-{name}": header_value(value) for name, value in attributes.items()}
        headers["Content-Type"] = "application/json"
        if self._hmac_key:
            headers[SIGNATURE_HEADER] = signature(self._hmac_key, event_id, event_time, body)
        status, data = await self._request("POST", self._sink, what=what, body=body, headers=headers)
        if not 200 <= status < 300:
            raise self._rejected(what, status, data)
        job = Job(
            id=event_id,
            job_type=job_type,
            queue_name=queue_name,
            payload=payload,
            priority=priority,
            metadata=metadata or {},
            idempotency_key=idempotency_key,
            created_at=now,
        )
        if idempotency_key is not None and self._remember > 0:
            self._accepted[idempotency_key] = job
            if len(self._accepted) > self._remember:
                self._accepted.popitem(last=False)
        return job

    async def get_job(self, job_id: str | uuid.UUID) -> Job | None:
        return None


class CloudEventsTargetSpec(SpecModel):
    """Send every job as a CloudEvent (binary content mode HTTP POST) to a sink: Knative Eventing, Argo
    Events, or any HTTP endpoint. Any 2xx answer means accepted."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
        description="URL of the sink the events are POSTed to (http or https).",
    )
    token_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret key holding a bearer token, sent as `Authorization: Bearer <token>`.",
    )
    hmac_secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret key holding an HMAC key: every event carries `Portico-Signature: "
        "sha256=<hex>`, the HMAC-SHA256 of `<ce-id>.<ce-time>.<body>`.",
    )
    timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=300,
        description="How long one job may take, retries included, before it counts as not accepted.",
    )


class CloudEventsTarget(JobTarget[CloudEventsTargetSpec]):
    name: ClassVar[str] = "cloudEvents"
    spec_model: ClassVar[type[SpecModel]] = CloudEventsTargetSpec

    def secret_refs(self, spec: CloudEventsTargetSpec) -> Sequence[SecretRef]:
        return tuple(r for r in (spec.token_secret_ref, spec.hmac_secret_ref) if r is not None)

    def build(self, spec: CloudEventsTargetSpec, context: TargetContext) -> JobCreator:
        secrets = context.secrets
        token = secrets.get(spec.token_secret_ref) if spec.token_secret_ref else None
        key = secrets.get(spec.hmac_secret_ref) if spec.hmac_secret_ref else None
        source = context.object_path or f"/portico/triggers/{context.ref}"
        try:
            return CloudEventsJobCreator(
                spec.url,
                source=source,
                token=token,
                hmac_key=key,
                deadline=spec.timeout_seconds,
                request_timeout=min(10.0, spec.timeout_seconds),
            )
        except ValueError as exc:
            raise TriggerStartError(
                f"spec.target.cloudEvents.url: {exc}", reason="InvalidTarget", retryable=False
            ) from None

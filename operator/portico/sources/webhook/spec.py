"""`spec.webhook`: the one model of a webhook endpoint, for the CRD, `portico validate` and the library.

`WebhookSpec` is what a JobTrigger resource says. `WebhookConfig` is the same model with what only a
library user needs on top (the seed's `prefix`, an inline secret, the listen address): it is a
`WebhookSpec`, so every rule is the spec's and a trigger takes either. Validation happens once: the
verifier and the compiled `payloadSchema` are kept on the validated model for the trigger to use.
"""

import math
from typing import Annotated, Any, Literal

from jsonschema.protocols import Validator
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

from portico.domain.model import SpecModel
from portico.domain.trigger import SecretRef, TriggerRef
from portico.sources.webhook.auth import (
    DEFAULT_TOLERANCE_SECONDS,
    Algorithm,
    Preset,
    RequestVerifier,
    build_verifier,
)
from portico.sources.webhook.payload_schema import compile_payload_schema

MIB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = MIB
MAX_BODY_BYTES_LIMIT = 10 * MIB
DEFAULT_RESPONSE_TIMEOUT_SECONDS = 5.0
MAX_RESPONSE_TIMEOUT_SECONDS = 9.0
"""GitHub gives up on a delivery after 10 s; the endpoint must have answered (503 at worst) before."""

PATH_PATTERN = r"^(/[A-Za-z0-9._~-]+)+$"
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"

Mode = Literal["request", "payload"]
JobTypeName = Annotated[str, Field(min_length=1, max_length=253)]
HeaderName = Annotated[str, Field(min_length=1, max_length=128, pattern=HEADER_NAME_PATTERN)]


def normalize_path(path: str) -> str:
    """`/hooks/a/` and `/hooks/a` are the same endpoint."""
    return path.rstrip("/") or "/"


def default_path(ref: TriggerRef) -> str:
    """`/hooks/<namespace>/<name>`: unique per resource, so default paths never collide."""
    return f"/hooks/{ref.namespace}/{ref.name}" if ref.namespace else f"/hooks/{ref.name}"


class RateLimitSpec(SpecModel):
    """A token bucket per trigger: requests over the limit are answered 429 with Retry-After."""

    requests_per_second: float = Field(
        gt=0, le=100_000, description="Sustained number of requests per second the endpoint accepts."
    )
    burst: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Requests accepted at once after a quiet period. Default: requestsPerSecond rounded up.",
    )

    @property
    def effective_burst(self) -> int:
        return self.burst if self.burst is not None else max(1, math.ceil(self.requests_per_second))


class JobTypeFromHeaderSpec(SpecModel):
    """Payload mode: choose the job type from an event header (e.g. `X-GitHub-Event: push` -> `ci.build`)."""

    header: str = Field(
        min_length=1,
        max_length=128,
        pattern=HEADER_NAME_PATTERN,
        description="The request header that names the event.",
    )
    mapping: dict[str, JobTypeName] = Field(
        min_length=1,
        max_length=200,
        description="Job type for each header value, e.g. {push: ci.build, release: ci.publish}.",
    )
    unmapped: Literal["ignore", "template"] = Field(
        default="ignore",
        description="For a header value not in the mapping: ignore the request (answered 200, no job) or "
        "create a job of the template's type (spec.job.type).",
    )


class WebhookAuthSpec(SpecModel):
    """How a request proves it comes from the sender. Every failure is answered 401 without saying why."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.preset) || self.type == 'hmac'",
                    "message": "preset applies to type hmac only",
                },
                {
                    "rule": "self.type != 'hmac' || has(self.preset) || has(self.header)",
                    "message": "hmac without a preset needs the signature header",
                },
                {
                    "rule": "!has(self.preset) || (!has(self.header) && !has(self.prefix))",
                    "message": "header and prefix are fixed by the preset",
                },
                {
                    "rule": "!has(self.preset) || self.algorithm == 'sha256'"
                    " || (self.preset == 'github' && self.algorithm == 'sha1')",
                    "message": "Stripe and Slack sign with sha256; GitHub with sha256 or sha1",
                },
            ]
        }
    )

    type: Literal["none", "bearer", "hmac"] = Field(
        description="none: no authentication (say so explicitly); bearer: a shared token in a header; "
        "hmac: a signature of the body computed with a shared secret."
    )
    preset: Preset | None = Field(
        default=None,
        description="For hmac: follow a sender's documented scheme: github (X-Hub-Signature-256), "
        "stripe (Stripe-Signature with timestamp) or slack (X-Slack-Signature with timestamp).",
    )
    secret_ref: SecretRef | None = Field(
        default=None,
        description="The Secret key holding the token or signing secret. Read per request, so rotating "
        "the Secret takes effect without a restart.",
    )
    header: str | None = Field(
        default=None,
        max_length=128,
        pattern=HEADER_NAME_PATTERN,
        description="Header carrying the token (bearer; default Authorization) or the signature (hmac "
        "without a preset).",
    )
    prefix: str | None = Field(
        default=None,
        max_length=64,
        description="Text before the token or signature in the header, e.g. 'Bearer ' (the bearer "
        "default) or 'sha256='.",
    )
    algorithm: Algorithm = Field(default="sha256", description="HMAC hash algorithm: sha1, sha256 or sha512.")
    tolerance_seconds: int = Field(
        default=DEFAULT_TOLERANCE_SECONDS,
        ge=1,
        le=3600,
        description="For the stripe and slack presets: how far the signed timestamp may be from now; "
        "requests outside are refused as replays.",
    )

    _verifier: RequestVerifier = PrivateAttr()

    @model_validator(mode="after")
    def _buildable(self) -> "WebhookAuthSpec":
        if self.preset is not None and self.type != "hmac":
            raise ValueError("auth.preset applies to type hmac only")
        if self.preset is not None and (self.header is not None or self.prefix is not None):
            raise ValueError(f"auth.header and auth.prefix are fixed by the {self.preset} preset")
        self._verifier = build_verifier(
            self.type,
            preset=self.preset,
            header=self.header,
            prefix=self.prefix,
            algorithm=self.algorithm,
            tolerance_seconds=self.tolerance_seconds,
        )
        return self

    def verifier(self) -> RequestVerifier:
        """The check this block describes, built when the block was validated."""
        return self._verifier


class WebhookSpec(SpecModel):
    """`spec.webhook`: an HTTP endpoint on the operator's webhook server that creates a job per POST."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.auth.type == 'none' || has(self.auth.secretRef)",
                    "message": "auth types bearer and hmac need auth.secretRef",
                },
                {
                    "rule": "!has(self.jobTypeFromHeader) || (has(self.mode) && self.mode == 'payload')",
                    "message": "jobTypeFromHeader applies to mode payload only",
                },
            ]
        }
    )

    mode: Mode = Field(
        default="request",
        description="request: the body is {job_type, payload, queue_name, priority}; payload: the whole JSON "
        "body becomes the job's payload and the job type comes from spec.job (or jobTypeFromHeader).",
    )
    allowed_job_types: list[JobTypeName] = Field(
        default_factory=list,
        max_length=100,
        description="The job types a request may create (403 otherwise). Empty: in request mode only "
        "spec.job.type; in payload mode any type the template or jobTypeFromHeader gives.",
    )
    job_type_from_header: JobTypeFromHeaderSpec | None = Field(
        default=None, description="Payload mode: take the job type from an event header."
    )
    record_headers: list[HeaderName] = Field(
        default_factory=list,
        max_length=20,
        description="Request headers copied into the job's metadata as webhook.header.<lower-case name>. "
        "The delivery id and event type of the presets are recorded anyway.",
    )
    delivery_id_header: str | None = Field(
        default=None,
        max_length=128,
        pattern=HEADER_NAME_PATTERN,
        description="A header carrying the sender's unique delivery id (e.g. X-Gitlab-Event-UUID), used as "
        "the job's idempotency key. Idempotency-Key and the presets' delivery ids are always honoured.",
    )
    payload_schema: dict[str, Any] | None = Field(
        default=None,
        description="A JSON Schema the payload must match (the whole body in payload mode, the payload field "
        "in request mode); a mismatch is answered 400 naming the failing path.",
    )
    rate_limit: RateLimitSpec | None = Field(
        default=None, description="Requests per second for this trigger."
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1,
        le=MAX_BODY_BYTES_LIMIT,
        description="Largest accepted request body in bytes (413 beyond it), enforced while reading.",
    )
    response_timeout_seconds: float = Field(
        default=DEFAULT_RESPONSE_TIMEOUT_SECONDS,
        gt=0,
        le=MAX_RESPONSE_TIMEOUT_SECONDS,
        description="How long a request may wait for the queue service before it is answered 503 with "
        "Retry-After. Well under GitHub's 10 s delivery timeout.",
    )

    path: str | None = Field(
        default=None,
        max_length=512,
        pattern=PATH_PATTERN,
        description="URL path of the endpoint, unique across the operator. Default: "
        "/hooks/<namespace>/<name>.",
    )
    auth: WebhookAuthSpec = Field(
        description="Authentication of requests. Required: an endpoint without it must say type: none."
    )

    _payload_validator: Validator | None = PrivateAttr(default=None)

    @field_validator("path")
    @classmethod
    def _no_dot_segments(cls, path: str | None) -> str | None:
        if path is not None and any(segment in (".", "..") for segment in path.split("/")):
            raise ValueError(f"path {path!r} must not contain '.' or '..' segments")
        return path

    @model_validator(mode="after")
    def _header_mapping_in_payload_mode(self) -> "WebhookSpec":
        if self.job_type_from_header is not None and self.mode != "payload":
            raise ValueError("jobTypeFromHeader applies to mode payload only")
        return self

    @model_validator(mode="after")
    def _secret_for_auth(self) -> "WebhookSpec":
        if self.auth.type != "none" and self.auth.secret_ref is None:
            raise ValueError(f"auth type {self.auth.type} needs auth.secretRef")
        return self

    @model_validator(mode="after")
    def _schema_compiles(self) -> "WebhookSpec":
        if self.payload_schema is not None:
            self._payload_validator = compile_payload_schema(self.payload_schema)
        return self

    @property
    def payload_validator(self) -> Validator | None:
        """`payloadSchema`, compiled when the spec was validated."""
        return self._payload_validator

    def endpoint_path(self, ref: TriggerRef) -> str:
        """Where the endpoint is served: `path`, else `/hooks/<namespace>/<name>`."""
        return self.path or default_path(ref)


class WebhookConfig(WebhookSpec):
    """A `WebhookSpec` for library use, shaped as the seed writes it:
    `WebhookConfig(prefix="/webhooks", allowed_job_types=[...])` serves `POST /webhooks/jobs`.

    Adds what a resource never says: where the endpoint lives when there is no resource name (`prefix`),
    the token or signing secret inline (`secret`, instead of `auth.secret_ref` and a `SecretResolver`),
    and where the trigger listens when it runs its own server (`host`, `port`). Authentication defaults
    to none. Set `path` instead of `prefix` to serve one exact path (a GitHub or Stripe endpoint).
    """

    prefix: str = Field(default="/webhooks", max_length=500, description="The endpoint is {prefix}/jobs.")
    auth: WebhookAuthSpec = Field(default_factory=lambda: WebhookAuthSpec(type="none"))
    secret: SecretStr | None = Field(default=None, description="The token or signing secret, inline.")
    host: str = Field(default="127.0.0.1", description="Listen address when the trigger runs its own server.")
    port: int = Field(default=8080, ge=0, le=65535, description="Listen port of its own server (0: random).")

    @field_validator("prefix")
    @classmethod
    def _absolute(cls, prefix: str) -> str:
        if not prefix.startswith("/"):
            raise ValueError("prefix must start with /")
        if any(segment in (".", "..") for segment in prefix.split("/")):
            raise ValueError(f"prefix {prefix!r} must not contain '.' or '..' segments")
        return normalize_path(prefix)

    @model_validator(mode="after")
    def _secret_for_auth(self) -> "WebhookConfig":
        """Replaces the spec's rule of the same name: an inline secret is as good as a reference."""
        if self.auth.type != "none" and self.secret is None and self.auth.secret_ref is None:
            raise ValueError(f"auth type {self.auth.type} needs secret or auth.secret_ref")
        return self

    def endpoint_path(self, ref: TriggerRef) -> str:
        return self.path or f"{self.prefix.rstrip('/')}/jobs"

"""`spec.webhook` as the API server and `portico validate` see it, and `WebhookConfig`, the same model
with the library's options: one model, validated once."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from pydantic import SecretStr, ValidationError

from portico.domain.trigger import SecretRef, TriggerRef
from portico.sources.webhook import payload_schema
from portico.sources.webhook import spec as spec_module
from portico.sources.webhook.spec import WebhookConfig, WebhookSpec

NO_AUTH = {"auth": {"type": "none"}}


def test_spec_defaults_and_wire_names() -> None:
    spec = WebhookSpec.model_validate(
        {
            "auth": {"type": "hmac", "preset": "stripe", "secretRef": {"name": "s", "key": "k"}},
            "mode": "payload",
            "rateLimit": {"requestsPerSecond": 2.5},
            "recordHeaders": ["User-Agent"],
        }
    )
    assert (spec.max_body_bytes, spec.response_timeout_seconds, spec.auth.tolerance_seconds) == (
        1048576,
        5.0,
        300,
    )
    assert spec.rate_limit is not None and spec.rate_limit.effective_burst == 3
    assert spec.auth.secret_ref == SecretRef(name="s", key="k")
    assert spec.endpoint_path(TriggerRef(name="b", namespace="a")) == "/hooks/a/b"
    assert spec.to_resource()["rateLimit"] == {"requestsPerSecond": 2.5}


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({}, "auth"),
        ({"auth": {"type": "hmac", "preset": "github"}}, "needs auth.secretRef"),
        ({"auth": {"type": "bearer"}}, "needs auth.secretRef"),
        (
            {"auth": {"type": "bearer", "preset": "github", "secretRef": {"name": "a", "key": "b"}}},
            "hmac only",
        ),
        ({"auth": {"type": "hmac", "secretRef": {"name": "a", "key": "b"}}}, "signature header"),
        (
            {
                "auth": {
                    "type": "hmac",
                    "preset": "github",
                    "header": "X-Sig",
                    "secretRef": {"name": "a", "key": "b"},
                }
            },
            "fixed by the github preset",
        ),
        (
            {
                "auth": {
                    "type": "hmac",
                    "preset": "slack",
                    "algorithm": "sha1",
                    "secretRef": {"name": "a", "key": "b"},
                }
            },
            "sha256",
        ),
        ({**NO_AUTH, "payloadSchema": {"type": "objekt"}}, "payloadSchema is not a valid JSON Schema"),
        ({**NO_AUTH, "payloadSchema": {"properties": {"a": {"minLength": -1}}}}, "$.properties.a.minLength"),
        ({**NO_AUTH, "payloadSchema": {"$ref": "https://example.org/s.json"}}, "only refer to its own parts"),
        (
            {**NO_AUTH, "payloadSchema": {"properties": {"a": {"$ref": "#/$defs/gone"}}}},
            "'#/$defs/gone' points to nothing",
        ),
        (
            {**NO_AUTH, "jobTypeFromHeader": {"header": "X-Event", "mapping": {"push": "ci"}}},
            "mode payload only",
        ),
        (
            {
                **NO_AUTH,
                "mode": "payload",
                "jobTypeFromHeader": {"header": "X-Event", "mapping": {"push": ""}},
            },
            "mapping",
        ),
        ({**NO_AUTH, "path": "hooks/no-slash"}, "path"),
        ({**NO_AUTH, "path": "/hooks/../admin"}, "'..'"),
        ({**NO_AUTH, "path": "/hooks/trailing/"}, "path"),
        ({**NO_AUTH, "maxBodyBytes": 0}, "maxBodyBytes"),
        ({**NO_AUTH, "maxBodyBytes": 11 * 1024 * 1024}, "maxBodyBytes"),
        ({**NO_AUTH, "responseTimeoutSeconds": 10}, "responseTimeoutSeconds"),
        ({**NO_AUTH, "rateLimit": {"requestsPerSecond": 0}}, "requestsPerSecond"),
        ({**NO_AUTH, "recordHeaders": ["Bad Header"]}, "recordHeaders"),
        ({**NO_AUTH, "allowedJobTypes": [""]}, "allowedJobTypes"),
        ({**NO_AUTH, "unknownField": 1}, "unknownField"),
    ],
)
def test_invalid_specs_are_refused_with_the_problem(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        WebhookSpec.model_validate(spec)
    assert problem in str(info.value)


def test_local_references_and_data_that_looks_like_one_are_fine() -> None:
    schema = {
        "$defs": {"amount": {"type": "integer"}},
        "properties": {"a": {"$ref": "#/$defs/amount"}, "b": {"const": {"$ref": "not a reference"}}},
    }
    assert WebhookSpec.model_validate({**NO_AUTH, "payloadSchema": schema}).payload_schema == schema


def test_cel_rules_are_declared_for_the_crd() -> None:
    """The API server enforces these; the model validators above enforce the same for `portico validate`."""
    schema = WebhookSpec.model_json_schema(by_alias=True)
    rules = [r["rule"] for r in schema["x-kubernetes-validations"]]
    assert any("secretRef" in rule for rule in rules)
    auth_rules = [r["rule"] for r in schema["$defs"]["WebhookAuthSpec"]["x-kubernetes-validations"]]
    assert len(auth_rules) == 4


def test_library_config_needs_a_secret_for_authentication() -> None:
    with pytest.raises(ValidationError, match="needs secret"):
        WebhookConfig(auth={"type": "bearer"})
    config = WebhookConfig(auth={"type": "bearer"}, secret="t0ken")
    assert "t0ken" not in repr(config)
    with pytest.raises(ValidationError, match="prefix"):
        WebhookConfig(prefix="webhooks")


def test_library_config_is_the_spec_with_the_seeds_names() -> None:
    config = WebhookConfig(prefix="/webhooks/", allowed_job_types=["email.send"])
    assert isinstance(config, WebhookSpec)
    assert (config.prefix, config.allowed_job_types) == ("/webhooks", ["email.send"])
    assert config.auth.type == "none"
    assert config.endpoint_path(TriggerRef(name="x")) == "/webhooks/jobs"
    assert WebhookConfig(prefix="/").endpoint_path(TriggerRef(name="x")) == "/jobs"
    exact = WebhookConfig(path="/hooks/github", auth={"type": "bearer"}, secret=SecretStr("t"))
    assert exact.endpoint_path(TriggerRef(name="x")) == "/hooks/github"
    with pytest.raises(ValidationError, match=r"'\.\.'"):
        WebhookConfig(prefix="/a/../b")
    with pytest.raises(ValidationError, match="mode payload only"):
        WebhookConfig(job_type_from_header={"header": "X-Event", "mapping": {"push": "ci"}})


def test_the_payload_schema_is_compiled_once_per_validation() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    with mock.patch.object(
        spec_module, "compile_payload_schema", wraps=payload_schema.compile_payload_schema
    ) as compiled:
        spec = WebhookSpec.model_validate({**NO_AUTH, "payloadSchema": schema})
        config = WebhookConfig(payload_schema=schema)
    assert compiled.call_count == 2
    assert spec.payload_validator is not None and config.payload_validator is not None
    assert not spec.payload_validator.is_valid({"n": "one"})
    assert WebhookSpec.model_validate(NO_AUTH).payload_validator is None


def test_the_verifier_is_built_when_the_auth_block_is_validated() -> None:
    spec = WebhookSpec.model_validate(
        {"auth": {"type": "hmac", "preset": "github", "secretRef": {"name": "s", "key": "k"}}}
    )
    assert spec.auth.verifier() is spec.auth.verifier()
    assert spec.auth.verifier().needs_body

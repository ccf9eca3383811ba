"""The RabbitMQ spec: its defaults on the wire and the rules between its fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from portico.sources.amqp import AmqpSpec
from tests.sources.amqp.conftest import spec


def test_spec_defaults_and_rules() -> None:
    assert spec("q").to_resource() == {
        "urlSecretRef": {"name": "mq", "key": "url"},
        "queue": "q",
        "declareQueue": False,
        "bindings": [],
        "prefetch": 32,
        "jobTypeMapping": {},
        "unmappedPolicy": "UseTemplate",
        "requeueDelaySeconds": 1.0,
        "reconnectIntervalSeconds": 0.2,
    }
    with pytest.raises(ValidationError, match="deadLetterExchange needs declareQueue"):
        spec("q", deadLetterExchange="dlx")
    with pytest.raises(ValidationError, match="Reject needs a jobTypeMapping"):
        spec("q", unmappedPolicy="Reject")
    with pytest.raises(ValidationError, match="eventTypeField"):
        spec("q", eventTypeField="a..b")
    with pytest.raises(ValidationError, match="non-empty job type"):
        spec("q", jobTypeMapping={"a": " "})
    with pytest.raises(ValidationError, match="prefetch"):
        spec("q", prefetch=0)


def test_the_url_secret_is_optional_in_python_and_required_in_a_manifest() -> None:
    assert AmqpSpec(queue="q").url_secret_ref is None
    schema = AmqpSpec.model_json_schema(by_alias=True)
    assert "urlSecretRef" in schema["required"]
    with pytest.raises(ValidationError, match="Ignore needs a jobTypeMapping"):
        spec("q", unmappedPolicy="Ignore")
    with pytest.raises(ValidationError, match="payloadField"):
        spec("q", payloadField="a b")

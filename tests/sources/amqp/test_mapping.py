"""Message → job, without a broker: event type, job type, payload, queue, priority and identity."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace
from typing import Any

import pytest

from portico.sources.amqp import AmqpSpec, JobRequest, Poison, job_request, lookup
from tests.sources.amqp.conftest import spec


def message(body: bytes, message_id: str | None = None, type: str | None = None) -> Any:
    return SimpleNamespace(body=body, message_id=message_id, type=type, routing_key="q")


def request(delivery: Any, config: AmqpSpec | None = None, has_template: bool = True) -> JobRequest:
    result = job_request(config or spec("q"), delivery, ref_key="u-1", has_template=has_template)
    assert result is not None
    return result


def test_lookup_follows_dotted_paths() -> None:
    assert lookup({"meta": {"event": "x"}}, "meta.event") == "x"
    assert lookup({"meta": "flat"}, "meta.event") is None
    assert lookup([1], "a") is None


def test_key_is_the_message_id_or_a_hash_of_the_body() -> None:
    """(aio-pika's publishers always set a message id, so the body hash is tested on its own.)"""

    def message(body: bytes, message_id: str | None = None) -> Any:
        return SimpleNamespace(body=body, message_id=message_id, type=None, routing_key="q")

    same = [request(message(b'{"a": 1}')).idempotency_key for _ in range(2)]
    other = request(message(b'{"a": 2}')).idempotency_key
    assert same[0] == same[1] != other
    assert same[0] == "amqp/u-1/sha256:" + hashlib.sha256(b'{"a": 1}').hexdigest()
    assert request(message(b"{}", "id-7")).idempotency_key == "amqp/u-1/id-7"


SEED = dict(
    eventTypeField="event_type",
    payloadField="payload",
    queueField="queue",
    priorityField="priority",
    jobTypeMapping={"user.created": "email.welcome"},
    unmappedPolicy="Ignore",
)


def test_the_seed_shape_takes_payload_queue_and_priority_from_the_body() -> None:
    body = {"event_type": "user.created", "payload": {"to": "a@b.c"}, "queue": "emails", "priority": 5}
    got = request(message(json.dumps(body).encode(), "m-1"), spec("q", **SEED), has_template=False)
    assert (got.job_type, got.payload, got.queue_name, got.priority) == (
        "email.welcome",
        {"to": "a@b.c"},
        "emails",
        5,
    )
    bare = request(message(b'{"event_type": "user.created"}', "m-2"), spec("q", **SEED))
    assert (bare.payload, bare.queue_name, bare.priority) == ({}, None, None), "absent: the template's"
    ignored = job_request(
        spec("q", **SEED), message(b'{"event_type": "other"}'), ref_key="u", has_template=False
    )
    assert ignored is None


@pytest.mark.parametrize(
    "body, message_text",
    [
        ({"event_type": "user.created", "payload": [1]}, "payload is not a JSON object"),
        ({"event_type": "user.created", "queue": 7}, "queue is not a queue name"),
        ({"event_type": "user.created", "priority": "high"}, "priority is not an integer"),
        ({"event_type": "user.created", "priority": 10**6}, "priority is not an integer"),
        ({"event_type": "user.created", "priority": True}, "priority is not an integer"),
    ],
)
def test_fields_of_the_wrong_shape_are_poison(body: dict[str, Any], message_text: str) -> None:
    with pytest.raises(Poison, match=message_text):
        request(message(json.dumps(body).encode()), spec("q", **SEED))


def test_unmapped_without_template_or_in_reject_mode_is_poison() -> None:
    with pytest.raises(Poison, match="no job template"):
        request(message(b"{}"), spec("q"), has_template=False)
    strict = spec("q", jobTypeMapping={"a": "b"}, unmappedPolicy="Reject", eventTypeField="t")
    with pytest.raises(Poison, match="'x' is not in jobTypeMapping"):
        request(message(b'{"t": "x"}'), strict)
    with pytest.raises(Poison, match="without event type"):
        request(message(b"{}"), strict)
    with pytest.raises(Poison, match="input policy"):
        request(message(b"not json"))
    assert request(message(b"{}", type="a"), strict).job_type == "b", "the AMQP type property"

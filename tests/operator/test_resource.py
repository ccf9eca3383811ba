"""The resource model read from a watch event's body."""

from portico.operator.resource import Resource


def test_the_resource_creation_time_is_read_from_the_body() -> None:
    body = {"metadata": {"name": "t", "uid": "u", "creationTimestamp": "2026-03-02T09:00:00Z"}}
    created = Resource.from_body(body).created_at
    assert created is not None and created.isoformat() == "2026-03-02T09:00:00+00:00"
    assert Resource.from_body({"metadata": {"name": "t", "creationTimestamp": "garbage"}}).created_at is None

"""The compact record a sharded replica keeps of triggers it only watches."""

from portico.operator.resource import Resource
from portico.operator.watched import WatchedTriggers, source_name
from tests.operator.fakes import body


def test_a_kept_object_comes_back_as_the_same_resource() -> None:
    original = Resource.from_body(
        body(finalizers=["f"], generation=3, version="12", status={"jobsCreated": 4, "conditions": []})
        | {"spec": {"job": {"type": "x", "payload": {"deep": [1, {"a": None}]}}, "fake": {"n": 1.5}}}
    )
    watched = WatchedTriggers()
    watched.keep(original)
    assert "uid-1" in watched and list(watched) == ["uid-1"] and len(watched) == 1
    assert watched.pop("uid-1") == original
    assert watched.pop("uid-1") is None and len(watched) == 0


def test_a_kept_object_is_much_smaller_than_the_object() -> None:
    spec = {"job": {"type": "report.daily", "queue": "reports", "payload": {"k": "v" * 40}}}
    resource = Resource.from_body(body(status={"phase": "Running", "jobsCreated": 10}) | {"spec": spec})
    watched = WatchedTriggers()
    watched.keep(resource)
    assert len(watched._objects["uid-1"]) < 400


def test_the_source_is_the_one_block_set() -> None:
    names = ("schedule", "webhook")
    assert source_name({"job": {}, "schedule": {}}, names) == "schedule"
    assert source_name({"job": {}}, names) is None
    assert source_name({"schedule": {}, "webhook": {}}, names) is None
    assert source_name({"schedule": None}, names) is None

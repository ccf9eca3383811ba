"""The registry: watch events, removal, leadership; driven through a fake source at our own port
boundary (the real sources and the real API server are exercised in tests/e2e)."""

from typing import Any

import pytest

from portico.operator.resource import FINALIZER
from tests.operator.fakes import Finalizers, body, resource, settle


@pytest.mark.looptime
async def test_same_generation_does_nothing(env: Any) -> None:
    registry, source, *_ = env
    await registry.apply(resource())
    await registry.apply(resource(annotations={"team": "a"}))
    assert len(source.built) == 1


@pytest.mark.looptime
async def test_delete_stops_and_forgets(env: Any) -> None:
    registry, source, _, _, _ = env
    await registry.apply(resource())
    await registry.remove("uid-1")
    assert not source.built[0].is_running
    assert registry.managed() == []
    await registry.remove("uid-1")


@pytest.mark.looptime
async def test_deleted_event_stops_the_trigger(env: Any) -> None:
    registry, source, *_ = env
    registry.finalizers = Finalizers()
    await registry.observe(None, body(finalizers=[FINALIZER]))
    await registry.observe("DELETED", body(finalizers=[FINALIZER]))
    assert not source.built[0].is_running and registry.managed() == []


@pytest.mark.looptime
async def test_stepping_down_stops_single_active_triggers_and_writes_that_first(env: Any) -> None:
    registry, source, patcher, _, _ = env
    await registry.apply(resource())
    await settle()
    assert patcher.status["isRunning"] is True
    await registry.set_leading(False)
    assert not source.built[0].is_running
    assert patcher.status["isRunning"] is False, "written while still the leader"
    await registry.apply(resource(2))
    assert len(source.built) == 1, "a follower does not run single-active sources"
    await registry.set_leading(True)
    await settle()
    assert source.built[-1].is_running and patcher.status["observedGeneration"] == 2


@pytest.mark.looptime
async def test_sharded_ownership_runs_only_owned_triggers_and_hands_over_with_a_final_flush(env: Any) -> None:
    """With an owner predicate (sharding), a trigger runs only while this replica owns it; giving it up
    stops it and flushes its counts, but not a phase: the trigger keeps running on its next owner."""
    registry, source, patcher, events, _ = env
    owned: set[str] = set()
    registry._owner = owned.__contains__
    await registry.apply(resource())
    await settle()
    assert source.built == [] and patcher.status == {} and events.events == []

    owned.add("uid-1")
    await registry.take_over({"uid-1"})
    await settle()
    assert source.built[-1].is_running
    assert patcher.status["phase"] == "Running" and patcher.status["isRunning"] is True
    await source.built[-1].run_now("a")
    await registry.hand_over({"uid-1"})
    owned.discard("uid-1")
    assert not source.built[-1].is_running
    assert patcher.status["jobsCreated"] == 1, "the counts are flushed before the shard is let go"
    assert patcher.status["isRunning"] is True, "no phase written on the way out"
    await registry.apply(resource(generation=2))
    await settle()
    assert len(source.built) == 1, "a spec change does not start a trigger this replica does not own"


@pytest.mark.looptime
async def test_a_deletion_seen_while_no_replica_owns_the_shard_is_finalized_by_the_next_owner(
    env: Any,
) -> None:
    registry, source, *_ = env
    owned: set[str] = set()
    registry._owner = owned.__contains__
    writer = registry.finalizers = Finalizers()
    await registry.observe("ADDED", body(finalizers=[FINALIZER]))
    await registry.observe("MODIFIED", body(finalizers=[FINALIZER], deleting=True, version="9"))
    assert writer.writes == [] and source.built == []
    owned.add("uid-1")
    await registry.take_over({"uid-1"})
    assert writer.writes == [([], "9")], "released by the shard's new owner"
    assert source.built == [], "and never started"


@pytest.mark.looptime
async def test_a_trigger_of_another_replicas_shard_is_only_remembered_and_starts_from_its_latest_object(
    env: Any,
) -> None:
    """A replica keeps no managed trigger (no parsed spec, no status tracking) for what it neither owns
    nor serves; when the shard arrives it starts from the last object it saw."""
    registry, source, patcher, *_ = env
    owned: set[str] = set()
    registry._owner = owned.__contains__
    registry.finalizers = Finalizers()
    await registry.observe("ADDED", body())
    await registry.observe("MODIFIED", body(generation=2, version="8", status={"lastScheduleTime": "x"}))
    assert registry.managed() == [] and registry.known_uids() == {"uid-1"}
    owned.add("uid-1")
    await registry.take_over(registry.known_uids())
    await settle()
    (managed,) = registry.managed()
    assert source.built[-1].is_running and managed.resource.generation == 2
    assert managed.resource.status == {"lastScheduleTime": "x"}
    assert managed.resource.resource_version == "8"
    assert patcher.status["phase"] == "Running"


@pytest.mark.looptime
async def test_handing_a_shard_over_keeps_only_the_object_and_never_restarts_it_until_it_returns(
    env: Any,
) -> None:
    registry, source, *_ = env
    owned = {"uid-1"}
    registry._owner = owned.__contains__
    await registry.observe("ADDED", body())
    await settle()
    assert source.built[-1].is_running
    await registry.hand_over({"uid-1"})
    assert registry.managed() == [] and registry.known_uids() == {"uid-1"}
    await registry.observe("MODIFIED", body(generation=2, version="9"))
    assert registry.managed() == [] and len(source.built) == 1, "still ours, but being handed over"
    await registry.take_over({"uid-1"})  # the shard comes back
    assert len(source.built) == 2 and source.built[-1].is_running
    assert registry.managed()[0].resource.generation == 2
    await registry.observe("DELETED", body(generation=2))
    assert registry.known_uids() == set()


@pytest.mark.looptime
async def test_every_replica_keeps_serving_a_trigger_that_every_replica_serves(env: Any) -> None:
    registry, *_ = env
    served = type(registry.sources["fake"])(single_active=False)
    registry.sources["fake"] = served
    registry.lifecycle.sources = registry.sources
    registry._owner = set[str]().__contains__
    await registry.observe("ADDED", body())
    assert [m.uid for m in registry.managed()] == ["uid-1"] and served.built[-1].is_running


@pytest.mark.looptime
async def test_a_forgotten_watch_entry_goes_with_its_deletion(env: Any) -> None:
    registry, *_ = env
    registry._owner = set[str]().__contains__
    await registry.observe("ADDED", body())
    await registry.observe("DELETED", body())
    assert registry.known_uids() == set()

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

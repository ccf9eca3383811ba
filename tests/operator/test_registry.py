"""The registry: watch events, removal, leadership; driven through a fake source at our own port
boundary (the real sources and the real API server are exercised in tests/e2e)."""

from typing import Any

import pytest

from portico.operator.resource import FINALIZER
from portico.operator.shard_labels import ShardLabels
from portico.operator.sharding.routes import SHARD_LABEL
from portico.operator.sharding.shard_map import shard_of
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


def labelled(registry: Any, owned: set[str]) -> tuple[Finalizers, str]:
    """A registry sharded over 4 shards with shard labels; returns its finalizer writer and the label
    value uid-1 should carry for a source one replica runs."""
    registry._owner = owned.__contains__
    registry.labels = ShardLabels(4, registry.sources)
    registry.finalizers = writer = Finalizers()
    return writer, str(shard_of("uid-1", 4))


@pytest.mark.looptime
async def test_the_owner_labels_a_trigger_with_its_finalizer_and_starts_it_once_it_arrives_labelled(
    env: Any,
) -> None:
    registry, source, *_ = env
    writer, shard = labelled(registry, {"uid-1"})
    await registry.observe("ADDED", body())
    assert writer.writes == [([FINALIZER], "7")] and writer.labels == [{SHARD_LABEL: shard}]
    assert source.built == [], "the watch of its shard hands it on"
    await registry.observe("DELETED", body())  # how the API server reports leaving the unlabelled watch
    await registry.observe("ADDED", body(finalizers=[FINALIZER], labels={SHARD_LABEL: shard}, version="8"))
    await settle()
    assert source.built[-1].is_running and len(writer.writes) == 1


@pytest.mark.looptime
async def test_a_trigger_every_replica_serves_is_labelled_all(env: Any) -> None:
    registry, *_ = env
    registry.sources["fake"] = type(registry.sources["fake"])(single_active=False)
    registry.lifecycle.sources = registry.sources
    writer, _ = labelled(registry, {"uid-1"})
    await registry.observe("ADDED", body())
    assert writer.labels == [{SHARD_LABEL: "all"}]


@pytest.mark.looptime
async def test_a_replica_that_is_not_the_owner_corrects_a_wrong_shard_number_and_keeps_nothing(
    env: Any,
) -> None:
    registry, source, *_ = env
    writer, shard = labelled(registry, set())
    wrong = str((int(shard) + 1) % 4)
    await registry.observe("ADDED", body(labels={SHARD_LABEL: wrong}))
    assert writer.labels == [{SHARD_LABEL: shard}] and writer.writes == [], "the label only"
    assert registry.known_uids() == set() and source.built == []
    await registry.observe("MODIFIED", body(labels={SHARD_LABEL: shard}))
    assert len(writer.labels) == 1 and registry.known_uids() == set(), "its shard's watch lists it"


@pytest.mark.looptime
async def test_an_unlabelled_trigger_of_another_replica_is_remembered_until_its_owner_labels_it(
    env: Any,
) -> None:
    registry, source, *_ = env
    writer, _ = labelled(registry, set())
    await registry.observe("ADDED", body(labels={SHARD_LABEL: "07"}))
    assert registry.known_uids() == {"uid-1"} and writer.labels == [], "the owner labels it"
    await registry.observe("DELETED", body(labels={SHARD_LABEL: "07"}))  # labelled: it left the watch
    assert registry.known_uids() == set() and source.built == []


@pytest.mark.looptime
async def test_a_shard_that_arrives_labels_its_unlabelled_triggers_which_start_once_labelled(
    env: Any,
) -> None:
    registry, source, *_ = env
    owned: set[str] = set()
    writer, shard = labelled(registry, owned)
    await registry.observe("ADDED", body())
    assert registry.known_uids() == {"uid-1"} and writer.writes == []
    owned.add("uid-1")
    await registry.take_over(registry.known_uids())
    assert writer.labels == [{SHARD_LABEL: shard}] and source.built == []
    await registry.observe("ADDED", body(finalizers=[FINALIZER], labels={SHARD_LABEL: shard}, version="8"))
    await settle()
    assert source.built[-1].is_running

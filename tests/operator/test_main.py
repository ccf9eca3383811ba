"""The operator's wiring of shard changes to the registry and the JobTrigger watch (`run_shards`)."""

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest

from portico.operator.main import run_shards
from portico.operator.resource import FINALIZER
from tests.operator.fakes import Finalizers, body


class ShardStreams:
    """The watch's side of a shard change: which shards it watches, and what their streams showed."""

    def __init__(self) -> None:
        self.watched: set[int] = set()
        self.shown: set[str] = set()

    def watch_shards(self, shards: Iterable[int]) -> None:
        self.watched.update(shards)

    async def unwatch_shards(self, shards: Iterable[int]) -> set[str]:
        self.watched.difference_update(shards)
        return set(self.shown)


def sharded(registry: Any, streams: ShardStreams | None = None) -> tuple[set[str], Any]:
    owned: set[str] = set()
    registry._owner = owned.__contains__
    registry.finalizers = Finalizers()
    coordinator: Any = SimpleNamespace(shard_of=lambda uid: 3)
    run_shards(coordinator, registry, streams or ShardStreams())
    return owned, coordinator


@pytest.mark.looptime
async def test_a_shard_that_arrives_starts_the_triggers_only_watched_until_then_and_leaving_stops_them(
    env: Any,
) -> None:
    registry, source, *_ = env
    streams = ShardStreams()
    owned, coordinator = sharded(registry, streams)
    await registry.observe("ADDED", body())
    assert registry.managed() == []
    owned.add("uid-1")
    await coordinator.on_acquired(frozenset({3}))
    assert source.built[-1].is_running and streams.watched == {3}
    streams.shown = {"uid-1"}
    await coordinator.on_released(frozenset({3}))
    owned.discard("uid-1")
    assert not source.built[-1].is_running and registry.managed() == [] and streams.watched == set()
    assert registry.known_uids() == {"uid-1"}, "handed over until its shard comes back"


@pytest.mark.looptime
async def test_a_shard_that_arrives_releases_the_finalizer_of_a_trigger_deleted_while_no_one_owned_it(
    env: Any,
) -> None:
    registry, source, *_ = env
    owned, coordinator = sharded(registry)
    await registry.observe("ADDED", body(finalizers=[FINALIZER]))
    await registry.observe("MODIFIED", body(finalizers=[FINALIZER], deleting=True, version="9"))
    owned.add("uid-1")
    await coordinator.on_acquired(frozenset({3}))
    assert registry.finalizers.writes == [([], "9")] and source.built == []

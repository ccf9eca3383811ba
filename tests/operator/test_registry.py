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
    assert registry.get("uid-1") is None
    await registry.remove("uid-1")


@pytest.mark.looptime
async def test_deleted_event_stops_the_trigger(env: Any) -> None:
    registry, source, *_ = env
    registry.finalizers = Finalizers()
    await registry.observe(None, body(finalizers=[FINALIZER]))
    await registry.observe("DELETED", body(finalizers=[FINALIZER]))
    assert not source.built[0].is_running and registry.get("uid-1") is None


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

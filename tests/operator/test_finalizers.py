"""Our finalizer: added on first sight, released only after the trigger stopped."""

from typing import Any

import pytest

from portico.operator.resource import FINALIZER
from portico.operator.status import ObjectStatus
from tests.operator.fakes import Finalizers, body, settle


@pytest.mark.looptime
async def test_finalizer_added_on_first_sight_and_released_after_stop(env: Any) -> None:
    registry, source, *_ = env
    writer = registry.finalizers = Finalizers()
    await registry.observe("ADDED", body(finalizers=["other/keep"]))
    assert writer.writes == [(["other/keep", FINALIZER], "7")]
    assert source.built[0].is_running
    await registry.observe("MODIFIED", body(finalizers=["other/keep", FINALIZER], version="8"))
    assert len(writer.writes) == 1 and len(source.built) == 1
    await registry.observe("MODIFIED", body(finalizers=["other/keep", FINALIZER], deleting=True, version="9"))
    assert not source.built[0].is_running
    assert writer.writes[-1] == (["other/keep"], "9"), "only our finalizer is released, at that version"
    assert registry.managed() == []


@pytest.mark.looptime
async def test_status_writes_start_from_the_version_the_finalizer_write_left(env: Any) -> None:
    """A watch that lags (a busy replica) still shows the object before our finalizer write; the first
    status write must not carry that older version as its precondition, or every trigger's first write
    conflicts and costs a read and a second write."""
    registry, _, patcher, *_ = env
    registry.finalizers = Finalizers(after=ObjectStatus({"jobsCreated": 2}, "8"))
    await registry.observe("ADDED", body(version="7", status={"jobsCreated": 2}))
    (managed,) = registry.managed()
    assert managed.resource.resource_version == "8" and FINALIZER in managed.resource.finalizers
    await managed.trigger.run_now("a")  # type: ignore[union-attr]
    await settle()
    assert patcher.preconditions[0] == "8"
    assert patcher.status["jobsCreated"] == 3, "counted on top of what the server had"


@pytest.mark.looptime
async def test_a_finalizer_write_that_did_not_happen_leaves_the_resource_as_it_was(env: Any) -> None:
    registry, *_ = env
    registry.finalizers = Finalizers(after=None)
    await registry.observe("ADDED", body(version="7"))
    (managed,) = registry.managed()
    assert managed.resource.resource_version == "7" and FINALIZER not in managed.resource.finalizers

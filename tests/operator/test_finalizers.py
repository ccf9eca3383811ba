"""Our finalizer: added on first sight, released only after the trigger stopped."""

from typing import Any

import pytest

from portico.operator.resource import FINALIZER
from tests.operator.fakes import Finalizers, body


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
    assert registry.get("uid-1") is None

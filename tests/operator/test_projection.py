"""The status projection: counters across trigger instances and operator restarts."""

from typing import Any

import pytest

from tests.operator.fakes import resource, settle


@pytest.mark.looptime
async def test_counters_survive_reconfigure_and_restart(env: Any) -> None:
    registry, source, patcher, _, _ = env
    patcher.status.update({"jobsCreated": 10, "errors": 2})
    await registry.apply(resource(status={"jobsCreated": 10, "errors": 2}))
    await source.built[0].emitter.emit(payload={"n": 1})
    await registry.apply(resource(2))
    await source.built[1].emitter.emit(payload={"n": 2})
    await settle()
    assert patcher.status["jobsCreated"] == 12
    assert patcher.status["errors"] == 2
    assert patcher.status["lastJobId"]

"""Retries of a trigger that failed to start: backoff, and cancelled by a spec change."""

import asyncio
from typing import Any

import pytest

from tests.operator.fakes import resource, settle


@pytest.mark.looptime
async def test_start_failure_is_retried_with_backoff_then_fixed_by_spec_change(env: Any) -> None:
    registry, source, patcher, _events, _ = env
    loop = asyncio.get_running_loop()
    await registry.apply(resource(fail="broker unreachable"))
    await asyncio.sleep(30)
    attempts = len(source.built)
    assert 6 <= attempts <= 11, "backoff 1, 2, 4, 8, 8... s, each jittered to 50-100 %, within 30 s"
    assert patcher.status["phase"] == "Failed"
    assert patcher.status["conditions"][0]["reason"] == "Unreachable"
    assert "broker unreachable" in patcher.status["lastError"]
    assert patcher.status["errors"] == attempts
    t0 = loop.time()
    await registry.apply(resource(2))
    assert loop.time() - t0 < 0.1
    await settle()
    assert patcher.status["phase"] == "Running" and patcher.status["lastError"] is None
    await asyncio.sleep(30)
    assert len(source.built) == attempts + 1, "the pending retry was cancelled"

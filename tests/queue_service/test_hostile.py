"""Property-based: the queue service against generated hostile requests (deep, non-finite, oversized,
surrogate-laden, control characters in names, broken bytes, compressed and corrupt bodies, malformed header
lines carrying the real token). No 5xx but a deliberate 503, no job from a refused request, the token
never echoed or logged, every answer within bounded time and memory."""

import resource
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portico.testing.hostile import TOKEN, Case, LogRecorder, deliberate, exchange, hostile_case, status_of
from tests.conftest import RunningQueueService

MEMORY_GROWTH_LIMIT_KB = 400_000


@st.composite
def cases(draw: st.DrawFn) -> Case:
    return hostile_case(lambda options: draw(st.sampled_from(options)), envelope=True)


@pytest.fixture
async def guarded(queue_service_factory: Any) -> RunningQueueService:
    service: RunningQueueService = await queue_service_factory(token=TOKEN)
    return service


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases())
async def test_hostile_requests_are_answered_without_harm(guarded: RunningQueueService, case: Case) -> None:
    port = int(guarded.url.rsplit(":", 1)[1])
    before = len(await guarded.list_jobs())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with LogRecorder() as logs:
        answer = await exchange(port, case.raw("/v1/jobs"), wait=10)
    status = status_of(answer)
    assert deliberate(status), answer[:300]
    assert TOKEN.encode() not in answer
    assert not logs.leaked(TOKEN)
    after = len(await guarded.list_jobs())
    assert after == before + (1 if status == 201 else 0), (status, answer[:300])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < MEMORY_GROWTH_LIMIT_KB

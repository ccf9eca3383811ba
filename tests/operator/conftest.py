from typing import Any

import pytest

from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.operator.kube import SecretCache
from portico.operator.registry import TriggerRegistry
from portico.operator.retry import RetryPolicy
from portico.operator.status import StatusWriter
from tests.operator.fakes import Events, FakeSource, Patcher


@pytest.fixture
async def env() -> Any:
    """A registry with the fake source, a recording status patcher and event sink, and an in-memory
    job creator: `(registry, source, patcher, events, creator)`."""
    source = FakeSource()
    patcher = Patcher()
    writer = StatusWriter(patcher, interval=1.0)
    await writer.start()
    events = Events()
    creator = InMemoryJobCreator()
    registry = TriggerRegistry(
        sources={"fake": source},
        job_creator=creator,
        status_writer=writer,
        events=events,
        secrets=SecretCache(None),
        retry=RetryPolicy(initial=1, maximum=8),
    )
    yield registry, source, patcher, events, creator
    await registry.stop_all()
    await writer.close()

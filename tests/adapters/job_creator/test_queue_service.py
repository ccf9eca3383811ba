"""The queue service target picks the right creator: the operator's shared one for an empty block, and
never the operator's token for a URL a trigger names."""

import pytest

from portico.adapters.job_creator.http import HttpJobCreator
from portico.adapters.job_creator.memory import InMemoryJobCreator
from portico.adapters.job_creator.queue_service import QueueServiceTarget, QueueServiceTargetSpec
from portico.domain.trigger import TriggerRef
from portico.ports.job_creator import JobCreationError
from portico.ports.job_target import TargetContext
from portico.ports.job_trigger import TriggerStartError
from portico.ports.trigger_source import SecretNotFoundError, StaticSecrets

SHARED = InMemoryJobCreator()
CONTEXT = TargetContext(
    ref=TriggerRef("t", "ns"), shared=SHARED, secrets=StaticSecrets({("team", "token"): "team-token"})
)


def build(target: QueueServiceTarget, **block: object) -> object:
    return target.build(QueueServiceTargetSpec.model_validate(block), CONTEXT)


async def test_an_empty_block_shares_the_operators_creator() -> None:
    assert build(QueueServiceTarget("http://operator-queue:8000")) is SHARED


async def test_a_triggers_own_url_gets_only_its_own_token() -> None:
    target = QueueServiceTarget("http://operator-queue:8000")
    own = build(target, url="http://team-queue:8000/")
    assert isinstance(own, HttpJobCreator) and own.base_url == "http://team-queue:8000" and own._token is None
    with_token = build(target, url="http://team-queue:8000", tokenSecretRef={"name": "team", "key": "token"})
    assert isinstance(with_token, HttpJobCreator) and with_token._token == "team-token"
    token_only = build(target, tokenSecretRef={"name": "team", "key": "token"})
    assert isinstance(token_only, HttpJobCreator) and token_only.base_url == "http://operator-queue:8000"
    assert token_only._token == "team-token"
    for creator in (own, with_token, token_only):
        await creator.close()  # type: ignore[attr-defined]


def test_without_a_default_url_a_token_alone_is_refused_and_a_missing_secret_waits() -> None:
    with pytest.raises(TriggerStartError, match="url is required"):
        build(QueueServiceTarget(None), tokenSecretRef={"name": "team", "key": "token"})
    with pytest.raises(SecretNotFoundError):
        build(QueueServiceTarget("http://q"), tokenSecretRef={"name": "absent", "key": "token"})


async def test_a_triggers_own_queue_service_counts_in_the_operators_queue_metrics() -> None:
    shared = HttpJobCreator("http://127.0.0.1:1", deadline=0.5, backoff_max=0.05)
    context = TargetContext(ref=TriggerRef("t", "ns"), shared=shared, secrets=StaticSecrets({}))
    own = QueueServiceTarget(None).build(
        QueueServiceTargetSpec.model_validate({"url": "http://127.0.0.1:1"}), context
    )
    assert isinstance(own, HttpJobCreator) and own is not shared
    try:
        with pytest.raises(JobCreationError):
            await own.create_job("t", {}, idempotency_key="k")
    finally:
        await own.close()
        await shared.close()
    assert shared.requests_by_outcome["error"] >= 1 and shared.request_seconds.count >= 1

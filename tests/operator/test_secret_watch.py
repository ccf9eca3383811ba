"""Secret dependencies: a trigger waiting for a Secret starts when it appears."""

from typing import Any

import pytest

from tests.operator.fakes import resource, settle


@pytest.mark.looptime
async def test_missing_secret_recovers_when_secret_appears(env: Any) -> None:
    registry, source, patcher, _, _ = env
    await registry.apply(resource(secret={"name": "creds", "key": "token"}))
    await settle()
    assert patcher.status["phase"] == "Failed"
    assert "Secret 'creds' key 'token'" in patcher.status["lastError"]
    assert registry.references_secret("ns", "creds")
    import base64

    await registry.secret_changed("ns", "creds", {"token": base64.b64encode(b"s3cret").decode()})
    await settle()
    assert patcher.status["phase"] == "Running"
    assert source.built[-1].secret_value == "s3cret"
    assert "s3cret" not in str(patcher.status)

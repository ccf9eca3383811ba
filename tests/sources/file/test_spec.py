"""The file spec: its defaults on the wire and what it refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from portico.sources.file.spec import FileSpec


def test_spec_defaults_and_validation() -> None:
    assert FileSpec(path="/data").to_resource() == {
        "path": "/data",
        "patterns": ["*"],
        "ignorePatterns": [".*", "*.tmp", "*.part"],
        "recursive": False,
        "events": ["created", "modified", "movedIn"],
        "settleSeconds": 1.0,
        "triggerExisting": True,
    }
    for fields, message in [
        ({"path": "relative/dir"}, "path"),
        ({"patterns": []}, "patterns"),
        ({"patterns": ["/abs/*.csv"]}, "relative"),
        ({"patterns": [""]}, "non-empty glob"),
        ({"events": ["created", "created"]}, "must not repeat"),
        ({"events": ["deleted"]}, "events"),
        ({"settleSeconds": -1}, "settleSeconds"),
    ]:
        with pytest.raises(ValidationError) as info:
            FileSpec.model_validate({"path": "/data", **fields})
        assert message in str(info.value), fields

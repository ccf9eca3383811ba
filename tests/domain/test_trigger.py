"""The job template of a manifest (`spec.job`) under the input policy."""

import json

import pytest
from pydantic import ValidationError

from portico.domain.trigger import JobTemplate


def test_job_templates_obey_the_input_policy() -> None:
    """A manifest's spec.job is checked like any input, so `portico validate` and the operator refuse it."""
    for bad in (
        {"type": "t", "payload": {"x": float("nan")}},
        {"type": "t", "payload": {"x": 10**30}},
        {"type": "t", "payload": {"x": json.loads("[" * 64 + "]" * 64)}},
        {"type": "t\nforged"},
        {"type": "t", "queue": "q\x00"},
    ):
        with pytest.raises(ValidationError):
            JobTemplate.model_validate(bad)
    JobTemplate.model_validate({"type": "t", "payload": {"x": json.loads("[" * 63 + "]" * 63)}})

"""The operator's settings from its command line and environment: who this replica is, and settings it
cannot start with."""

from __future__ import annotations

import socket

import pytest

from portico.cli import build_parser
from portico.operator.settings import OperatorSettings, SettingsError


def settings(*args: str) -> OperatorSettings:
    return OperatorSettings.from_args(
        build_parser().parse_args(["operator", "--queue-url", "http://q", *args])
    )


def test_identity_is_the_flag_then_the_pod_name_then_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POD_NAME", "HOSTNAME", "USER", "LOGNAME"):
        monkeypatch.delenv(name, raising=False)
    assert settings().identity == socket.gethostname()
    monkeypatch.setenv("POD_NAME", "portico-operator-7d9f-abcde")
    assert settings().identity == "portico-operator-7d9f-abcde"
    assert settings("--id", "replica-a").identity == "replica-a"
    assert OperatorSettings(queue_url="http://q").identity == "portico-operator-7d9f-abcde"


def test_settings_it_cannot_start_with(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTICO_QUEUE_URL", raising=False)
    with pytest.raises(SettingsError, match="queue service URL is required"):
        OperatorSettings.from_args(build_parser().parse_args(["operator"]))
    with pytest.raises(SettingsError, match="queue token file /nonexistent/token: No such file"):
        settings("--queue-token-file", "/nonexistent/token")


def test_shards_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTICO_SHARDS", raising=False)
    assert settings().shards == 0, "no sharding unless asked: one leader, as before"
    assert settings("--shards", "32").shards == 32
    monkeypatch.setenv("PORTICO_SHARDS", "16")
    assert settings().shards == 16
    with pytest.raises(SettingsError, match=r"--shards must be between 0 .* and 1024, not 5000"):
        settings("--shards", "5000")
    with pytest.raises(SystemExit):
        settings("--shards", "many")

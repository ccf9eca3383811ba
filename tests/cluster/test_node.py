"""The node names why it cannot start, before touching the machine."""

import shutil
from pathlib import Path

import pytest

from tests.cluster.node import Node, NodeError


def node(tmp_path: Path) -> Node:
    return Node(tmp_path / "cp-bin", tmp_path / "node-bin", tmp_path / "node")


def test_a_node_without_root_fails_naming_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(NodeError, match="a node needs root"):
        node(tmp_path).start([])
    assert not (tmp_path / "node").exists()


def test_a_missing_tool_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "nsenter" else real(tool))
    with pytest.raises(NodeError, match="nsenter is not installed"):
        node(tmp_path).start([])

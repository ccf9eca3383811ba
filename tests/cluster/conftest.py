"""Fixtures of the cluster tests: one node for the session (tests/cluster/node.py) with the project's
image loaded, and kubectl and helm bound to it. A node that cannot start fails the tests with the
reason; it never skips them."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from portico.testing.control_plane import find_binaries
from tests.cluster.node import Node, NodeError, build_node_binaries
from tests.conftest import REPO_ROOT, Kubectl
from tests.helm.conftest import Helm, find_helm


def build_image() -> str:
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "build-image.sh")], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(f"the image build failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def image() -> str:
    return build_image()


@pytest.fixture(scope="session")
def node(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    if find_helm() is None:
        pytest.fail("helm not found: run `make helm` (hack/install-helm.sh) or set PORTICO_HELM")
    started = time.monotonic()
    try:
        node = Node(find_binaries(REPO_ROOT), build_node_binaries(), tmp_path_factory.mktemp("node"))
        node.start([image])
    except NodeError as exc:
        pytest.fail(f"the node did not start: {exc}", pytrace=False)
    print(f"\nnode ready in {time.monotonic() - started:.1f} s")
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def node_kubectl(node: Node) -> Kubectl:
    return Kubectl(find_binaries(REPO_ROOT) / "kubectl", node.kubeconfig)


@pytest.fixture(scope="session")
def node_helm(node: Node, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = find_helm()
    assert binary is not None, "checked by the node fixture"
    return Helm(binary, tmp_path_factory.mktemp("helm-home"), node.kubeconfig)


def image_values(image: str) -> dict[str, str]:
    repository, _, tag = image.rpartition(":")
    return {"image.repository": repository, "image.tag": tag}

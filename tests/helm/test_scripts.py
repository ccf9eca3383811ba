"""The scripts around the chart: the offline helm installer is idempotent, and the kind end-to-end run
fails, naming what is missing, instead of passing without running."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO_ROOT

INSTALLED_HELM = REPO_ROOT / ".cache" / "bin" / "helm"


@pytest.mark.skipif(not INSTALLED_HELM.exists(), reason="helm not installed yet: run `make helm`")
def test_install_helm_is_idempotent_and_prints_the_path() -> None:
    before = INSTALLED_HELM.stat().st_mtime_ns
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "install-helm.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert proc.stdout.strip() == str(INSTALLED_HELM)
    assert INSTALLED_HELM.stat().st_mtime_ns == before, "an installed helm must be reused, not fetched again"
    version = subprocess.run(
        [str(INSTALLED_HELM), "version", "--short"], capture_output=True, text=True, check=True
    ).stdout
    assert version.startswith("v4.")
    assert (REPO_ROOT / ".cache" / "bin" / "kubectl").exists()

"""The scripts around the chart: the offline helm installer is idempotent, and the kind end-to-end run
fails, naming what is missing, instead of passing without running."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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


def test_e2e_kind_fails_naming_what_is_missing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "grep", "seq", "sleep"):
        target = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True)
        if target.returncode == 0:
            (bin_dir / tool).symlink_to(target.stdout.strip())
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "e2e-kind.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": str(bin_dir)},
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "e2e-kind: kind is not installed (https://kind.sigs.k8s.io)"

"""How the operator reaches the API server, decided before anything starts: a wrong kubeconfig is one
line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from portico.operator.kube_access import KubeConfigError, resolve_kube_access
from tests.conftest import NO_PASSWD_UID, as_numeric_user

GOOD = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "x",
}


def write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_an_explicit_kubeconfig_wins_even_inside_a_pod(tmp_path: Path) -> None:
    path = write(tmp_path / "config", GOOD)
    access = resolve_kube_access(str(path), {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert access.kubeconfig == str(path) and not access.in_cluster
    assert resolve_kube_access(None, {"KUBECONFIG": str(path)}).kubeconfig == str(path)


def test_inside_a_pod_without_kubeconfig_the_service_account_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from portico.operator import kube_access

    (tmp_path / "token").write_text("t")
    monkeypatch.setattr(kube_access, "SERVICE_ACCOUNT_DIR", str(tmp_path))
    assert resolve_kube_access(None, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}).in_cluster
    (tmp_path / "token").unlink()
    with pytest.raises(KubeConfigError, match=r"service-account token .* is not readable"):
        resolve_kube_access(None, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({**GOOD, "current-context": ""}, "has no current-context"),
        ({k: v for k, v in GOOD.items() if k != "current-context"}, "has no current-context"),
        ({**GOOD, "current-context": "y"}, "current-context 'y' is not among its contexts"),
        ("a: [\n", r"not valid YAML \(line 2\)"),
        ("- 1\n", "not a kubeconfig"),
    ],
)
def test_a_broken_kubeconfig_is_named(tmp_path: Path, doc: object, message: str) -> None:
    path = write(tmp_path / "config", doc)
    with pytest.raises(KubeConfigError, match=message):
        resolve_kube_access(str(path), {})


def test_missing_files_and_directories(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="no such file"):
        resolve_kube_access(str(tmp_path / "missing"), {})
    with pytest.raises(KubeConfigError, match="is a directory"):
        resolve_kube_access(str(tmp_path), {})
    with pytest.raises(KubeConfigError, match="no Kubernetes configuration"):
        resolve_kube_access(None, {"HOME": str(tmp_path)})


def operator_cli(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"KUBECONFIG", "KUBERNETES_SERVICE_HOST"}}
    prefix, as_user = ([], {}) if user is None else as_numeric_user(user)
    return subprocess.run(
        [*prefix, sys.executable, "-m", "portico", "operator", "--queue-url", "http://127.0.0.1:1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        **as_user,
    )


def unreadable(tmp_path: Path) -> tuple[Path, int | None]:
    """A kubeconfig the child cannot read: mode 000, read by another user (root would read it anyway)."""
    path = write(tmp_path / "config", GOOD)
    path.chmod(0o000)
    return path, NO_PASSWD_UID


@pytest.mark.parametrize("case", ["missing", "unreadable", "no-current-context"])
def test_the_command_prints_one_line_and_exits_2(tmp_path: Path, case: str) -> None:
    user = None
    if case == "missing":
        path = tmp_path / "missing"
        expected = f"portico operator: kubeconfig {path}: no such file"
    elif case == "unreadable":
        path, user = unreadable(tmp_path)
        expected = f"portico operator: kubeconfig {path}: cannot be read (Permission denied)"
    else:
        path = write(tmp_path / "config", {**GOOD, "current-context": None})
        expected = f"portico operator: kubeconfig {path} has no current-context"
    proc = operator_cli("--kubeconfig", str(path), user=user)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unreadable_queue_token_file_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config", GOOD)
    proc = operator_cli("--kubeconfig", str(path), "--queue-token-file", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == f"portico operator: queue token file {tmp_path / 'nope'}: No such file or directory"
    )


def test_in_cluster_credentials_use_the_service_address_not_cluster_dns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from portico.operator import kube_access

    monkeypatch.setattr(kube_access, "SERVICE_ACCOUNT_DIR", str(tmp_path))
    (tmp_path / "token").write_text("tok\n")
    pod = kube_access.in_cluster_credentials({"KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    assert (pod.server, pod.token, pod.ca_path, pod.namespace) == ("https://10.96.0.1:443", "tok", None, None)
    (tmp_path / "ca.crt").write_text("ca")
    (tmp_path / "namespace").write_text("portico-system\n")
    pod = kube_access.in_cluster_credentials(
        {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    )
    assert pod.server == "https://[fd00::1]:6443"
    assert (pod.ca_path, pod.namespace) == (str(tmp_path / "ca.crt"), "portico-system")
    (tmp_path / "token").unlink()
    with pytest.raises(KubeConfigError, match="service-account token"):
        kube_access.in_cluster_credentials({"KUBERNETES_SERVICE_HOST": "10.96.0.1"})

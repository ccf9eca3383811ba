"""The operator as a container runs it: a numeric user without a passwd entry, no login name in the
environment, no POD_NAME. Kopf would take its identity from the login name and crash at start; the
operator names itself instead (the host name here, the Pod's name in the chart)."""

from __future__ import annotations

import pwd
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from portico.testing.control_plane import ControlPlane
from tests.conftest import NO_PASSWD_UID, Kubectl
from tests.e2e.conftest import OperatorFactory, status_of, trigger_manifest, wait_for

pytestmark = pytest.mark.e2e

LOGIN_VARIABLES = ("LOGNAME", "USER", "LNAME", "USERNAME", "POD_NAME", "POD_ID", "KUBECONFIG")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can read (pytest's own temporary directories are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="portico-uid-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_operator_as_a_numeric_user_without_passwd_entry_reaches_running(
    control_plane: ControlPlane,
    kubectl: Kubectl,
    start_operator: OperatorFactory,
    shared_dir: Path,
) -> None:
    with pytest.raises(KeyError):
        pwd.getpwuid(NO_PASSWD_UID)
    kubeconfig = control_plane.write_kubeconfig(
        shared_dir / "kubeconfig", user="admin", token=control_plane.admin_token, portable=True
    )
    op = start_operator(
        kubeconfig=kubeconfig,
        user=NO_PASSWD_UID,
        drop_env=LOGIN_VARIABLES,
        env={"HOME": "/nonexistent"},
    )
    kubectl.apply(trigger_manifest("numeric", {"schedule": {"cron": "0 0 1 1 *"}}))
    wait_for(lambda: status_of(kubectl, "numeric").get("phase") == "Running", timeout=30, message="Running")
    lease = kubectl.json("get", "lease", "portico-operator")
    assert lease["spec"]["holderIdentity"] == socket.gethostname()
    assert "getpwuid" not in op.log()

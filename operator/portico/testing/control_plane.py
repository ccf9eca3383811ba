"""A real, minimal Kubernetes control plane: etcd and kube-apiserver on 127.0.0.1, nothing else.

This is the envtest approach: the API server is the real one (schema validation, pruning, CEL rules,
RBAC, the status subresource all behave as in a cluster), but there is no controller-manager,
scheduler or kubelet. So: namespaces never finish terminating, ownerReferences are never
garbage-collected, and ServiceAccount token Secrets never appear (tokens come from the TokenRequest API).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import logging
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portico.testing.processes import die_with_parent, free_port, stop_process_group

logger = logging.getLogger(__name__)

ADMIN_USER = "portico-admin"


@dataclass
class ControlPlane:
    """etcd + kube-apiserver in `data_dir`. Use as a context manager or call start()/stop()."""

    bin_dir: Path
    data_dir: Path | None = None
    api_port: int = 0
    ready_timeout: float = 120.0
    extra_apiserver_args: list[str] = field(default_factory=list)
    address: str = "127.0.0.1"
    """Where the API server listens and what it advertises (the `kubernetes` Service's endpoint)."""
    command_prefix: list[str] = field(default_factory=list)
    """Runs etcd and the API server under this (e.g. `nsenter --net=...` for a node's network namespace)."""
    service_account_admission: bool = False
    """Off without a controller-manager: nothing would publish the CA a ServiceAccount volume mounts."""

    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    _own_data_dir: bool = field(default=False, init=False)

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="portico-cp-"))
            self._own_data_dir = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pki_dir.mkdir(exist_ok=True)
        self.admin_token = secrets.token_hex(24)
        self._write_pki()
        try:
            self._start_etcd()
            self._start_apiserver()
            self._wait_ready()
            self.write_kubeconfig(self.kubeconfig, user=ADMIN_USER, token=self.admin_token)
            self._wait_default_namespace()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for name in ("kube-apiserver", "etcd"):
            proc = self.processes.pop(name, None)
            if proc is not None:
                stop_process_group(proc, timeout=15)
        for f in self._logs:
            f.close()
        self._logs.clear()
        if self._own_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes.values()]

    # --- paths and addresses --------------------------------------------------------------------

    @property
    def pki_dir(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "pki"

    @property
    def kubeconfig(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    # --- credentials ----------------------------------------------------------------------------

    def write_kubeconfig(
        self, path: Path, *, user: str, token: str, namespace: str = "default", portable: bool = False
    ) -> Path:
        """`portable`: the CA inline and the file readable by anyone, for a container or another user
        (the data dir is private)."""
        ca: dict[str, str] = (
            {"certificate-authority-data": base64.b64encode(self.ca_file.read_bytes()).decode()}
            if portable
            else {"certificate-authority": str(self.ca_file)}
        )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "portico", "cluster": {"server": self.server, **ca}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": "portico", "context": {"cluster": "portico", "user": user, "namespace": namespace}}
            ],
            "current-context": "portico",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o644 if portable else 0o600)
        return path

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
        """A raw API call as admin (or with `token`); returns the decoded JSON. For setup, not hot paths."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, context=self._ssl_context(), timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def service_account_kubeconfig(
        self,
        namespace: str,
        name: str,
        path: Path,
        *,
        expiration_seconds: int = 86400,
        portable: bool = False,
    ) -> Path:
        """A kubeconfig that acts as ServiceAccount `namespace/name`, so a test can run with exactly the
        RBAC a chart grants. Creates the ServiceAccount (and namespace) if missing; the token comes from
        the TokenRequest API, since no controller mints token Secrets here."""
        self.ensure_namespace(namespace)
        with contextlib.suppress(urllib.error.HTTPError):
            self.request(
                "POST",
                f"/api/v1/namespaces/{namespace}/serviceaccounts",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
            )
        token_request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        }
        result = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", token_request
        )
        return self.write_kubeconfig(
            path,
            user=f"system:serviceaccount:{namespace}:{name}",
            token=result["status"]["token"],
            namespace=namespace,
            portable=portable,
        )

    def ensure_namespace(self, name: str) -> None:
        try:
            self.request(
                "POST",
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise

    # --- internals ------------------------------------------------------------------------------

    _logs: list[Any] = field(default_factory=list, init=False)

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        assert self.data_dir is not None
        log = open(self.data_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        proc = subprocess.Popen(
            [*self.command_prefix, str(self.bin_dir / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.processes[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 40) -> str:
        assert self.data_dir is not None
        path = self.data_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _start_etcd(self) -> None:
        assert self.data_dir is not None
        self.etcd_port, peer_port = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                "--name",
                "portico",
                "--data-dir",
                str(self.data_dir / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"portico=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )

    def _start_apiserver(self) -> None:
        if not self.api_port:
            self.api_port = free_port()
        tokens = self.pki_dir / "tokens.csv"
        tokens.write_text(f'{self.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        tokens.chmod(0o600)
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={self.pki_dir / 'apiserver.crt'}",
                f"--tls-private-key-file={self.pki_dir / 'apiserver.key'}",
                f"--client-ca-file={self.ca_file}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={self.pki_dir / 'sa.pub'}",
                f"--service-account-signing-key-file={self.pki_dir / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.0.0.0/24",
                *([] if self.service_account_admission else ["--disable-admission-plugins=ServiceAccount"]),
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
                *self.extra_apiserver_args,
            ],
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode} during start:\n{self.log_tail(name)}"
                    )
            try:
                req = urllib.request.Request(self.server + "/readyz")
                req.add_header("Authorization", f"Bearer {self.admin_token}")
                with urllib.request.urlopen(req, context=self._ssl_context(), timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise TimeoutError(
            f"kube-apiserver not ready in {self.ready_timeout}s ({last}):\n{self.log_tail('kube-apiserver')}"
        )

    def _wait_default_namespace(self) -> None:
        """The `default` namespace is created asynchronously after /readyz reports ok."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.request("GET", "/api/v1/namespaces/default")
                return
            except urllib.error.HTTPError:
                time.sleep(0.1)
        raise TimeoutError("the default namespace did not appear")

    def _write_pki(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portico-test-ca")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        *(
                            [x509.IPAddress(ipaddress.ip_address(self.address))]
                            if self.address != "127.0.0.1"
                            else []
                        ),
                        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

        def pem_key(k: Any) -> bytes:
            return bytes(
                k.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )

        files = {
            "ca.crt": ca_cert.public_bytes(serialization.Encoding.PEM),
            "apiserver.crt": cert.public_bytes(serialization.Encoding.PEM),
            "apiserver.key": pem_key(key),
            "sa.key": pem_key(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for name, content in files.items():
            (self.pki_dir / name).write_bytes(content)
            (self.pki_dir / name).chmod(0o600)


def find_binaries(repo_root: Path) -> Path:
    """The cached control-plane binaries, building them first if needed (slow only the first time)."""
    env_dir = os.environ.get("PORTICO_CONTROL_PLANE_BIN")
    if env_dir:
        return Path(env_dir)
    script = repo_root / "hack" / "build-control-plane.sh"
    out = subprocess.run(["bash", str(script)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(out.stdout.strip().splitlines()[-1])

"""How the operator reaches the API server: an explicit kubeconfig, the Pod's service account, or
`~/.kube/config`, decided and checked once at start-up so that a wrong setting is one clear line."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes_asyncio import client, config

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
MAX_KUBECONFIG_BYTES = 4 * 1024 * 1024


class KubeConfigError(Exception):
    """The operator cannot know how to reach the API server; the message is one line for the user."""


@dataclass(frozen=True)
class KubeAccess:
    """How the operator reaches the API server: a kubeconfig file, or the Pod's service account."""

    kubeconfig: str | None

    @property
    def in_cluster(self) -> bool:
        return self.kubeconfig is None


def resolve_kube_access(kubeconfig: str | None, environ: Mapping[str, str] = os.environ) -> KubeAccess:
    """An explicit `--kubeconfig` (or `KUBECONFIG`) wins; inside a Pod the service-account token is
    used; outside, `~/.kube/config`. Whatever is chosen is checked here, before anything starts, so a
    wrong path or a kubeconfig without a current context ends in one clear line, not a traceback."""
    explicit = kubeconfig or environ.get("KUBECONFIG")
    if explicit:
        for path in explicit.split(os.pathsep):
            if path:
                check_kubeconfig(path)
        return KubeAccess(explicit)
    if environ.get("KUBERNETES_SERVICE_HOST"):
        token = Path(SERVICE_ACCOUNT_DIR) / "token"
        if not os.access(token, os.R_OK):
            raise KubeConfigError(
                f"running in a Pod but the service-account token {token} is not readable "
                "(automountServiceAccountToken: false?); pass --kubeconfig"
            )
        return KubeAccess(None)
    home = os.path.expanduser("~/.kube/config")
    if home.startswith("~") or not os.path.exists(home):
        raise KubeConfigError(
            "no Kubernetes configuration: not in a Pod (KUBERNETES_SERVICE_HOST unset) and no kubeconfig "
            "(--kubeconfig, KUBECONFIG or ~/.kube/config)"
        )
    check_kubeconfig(home)
    return KubeAccess(home)


@dataclass(frozen=True)
class InClusterCredentials:
    server: str
    token: str
    ca_path: str | None
    namespace: str | None


def in_cluster_credentials(environ: Mapping[str, str] = os.environ) -> InClusterCredentials:
    """The Pod's service account, as client-go's in-cluster config reads it: the API server's address
    from KUBERNETES_SERVICE_HOST/PORT (no cluster DNS needed, unlike `kubernetes.default.svc`), the
    token, CA and namespace from the mounted files. Read at every login, so a rotated token is used."""
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    if not host:
        raise KubeConfigError("not in a Pod: KUBERNETES_SERVICE_HOST is not set")
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    account = Path(SERVICE_ACCOUNT_DIR)
    try:
        token = (account / "token").read_text().strip()
    except OSError as exc:
        raise KubeConfigError(f"service-account token {account / 'token'}: {exc.strerror}") from None
    ca = account / "ca.crt"
    namespace = account / "namespace"
    return InClusterCredentials(
        server=f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}",
        token=token,
        ca_path=str(ca) if ca.exists() else None,
        namespace=namespace.read_text().strip() or None if namespace.exists() else None,
    )


def check_kubeconfig(path: str) -> None:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_KUBECONFIG_BYTES + 1)
    except FileNotFoundError:
        raise KubeConfigError(f"kubeconfig {path}: no such file") from None
    except IsADirectoryError:
        raise KubeConfigError(f"kubeconfig {path}: is a directory, not a file") from None
    except OSError as exc:
        raise KubeConfigError(f"kubeconfig {path}: cannot be read ({exc.strerror})") from None
    if len(raw) > MAX_KUBECONFIG_BYTES:
        raise KubeConfigError(f"kubeconfig {path}: larger than {MAX_KUBECONFIG_BYTES} bytes")
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise KubeConfigError(f"kubeconfig {path}: not valid YAML{where}") from None
    if not isinstance(doc, dict):
        raise KubeConfigError(f"kubeconfig {path}: not a kubeconfig (expected a mapping)")
    current = doc.get("current-context")
    if not current:
        raise KubeConfigError(
            f"kubeconfig {path} has no current-context; choose one with `kubectl config use-context NAME`"
        )
    names = {c.get("name") for c in doc.get("contexts") or [] if isinstance(c, dict)}
    if current not in names:
        raise KubeConfigError(f"kubeconfig {path}: current-context {current!r} is not among its contexts")


async def create_api_client(access: KubeAccess, *, connections: int = 32) -> client.ApiClient:
    """An API client of at most `connections` open connections (each TLS connection holds a read
    buffer of up to 256 KiB)."""
    configuration = client.Configuration()
    try:
        if access.kubeconfig is None:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(config_file=access.kubeconfig, client_configuration=configuration)
    except (config.ConfigException, OSError, ValueError) as exc:
        source = (
            "the service-account configuration" if access.in_cluster else f"kubeconfig {access.kubeconfig}"
        )
        message = " ".join(str(exc).split())
        raise KubeConfigError(f"{source}: {message}") from None
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)

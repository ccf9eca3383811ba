"""The plugin's view of the cluster: kubeconfig, context and namespace resolved as kubectl resolves
them, and the few API calls the commands make, over one kubernetes-asyncio client."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from portico.operator.resource import GROUP, PLURAL, VERSION

OPERATOR_SELECTOR = "app.kubernetes.io/name=portico-triggers,app.kubernetes.io/component=operator"
"""Labels the chart puts on the operator's Deployment and Pods."""
CRD_NAME = f"{PLURAL}.{GROUP}"


class PluginError(Exception):
    """An error the user can act on: printed as `error: ...`, exit code 1."""


class NotFoundError(PluginError):
    pass


@dataclass(frozen=True)
class Target:
    """What kubectl's global flags select."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    all_namespaces: bool = False
    request_timeout: float = 30.0


def _kubeconfig_namespace(kubeconfig: str | None, context: str | None) -> str | None:
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError, TypeError):
        return None
    chosen = next((c for c in contexts if c.get("name") == context), None) if context else active
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else None


def _in_cluster(target: Target) -> bool:
    default = Path(os.path.expanduser("~/.kube/config"))
    return (
        target.kubeconfig is None
        and "KUBECONFIG" not in os.environ
        and not default.exists()
        and "KUBERNETES_SERVICE_HOST" in os.environ
    )


def _service_account_namespace() -> str | None:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.exists() else None


def api_error(exc: ApiException, what: str) -> PluginError:
    """kubectl's wording for a refused call, without the response body's noise."""
    reason = {403: "Forbidden", 404: "NotFound", 401: "Unauthorized", 409: "Conflict"}.get(
        exc.status, exc.reason or str(exc.status)
    )
    message = what
    try:
        import json

        message = json.loads(exc.body or "{}").get("message") or what
    except ValueError:
        pass
    error = NotFoundError if exc.status == 404 else PluginError
    return error(f"Error from server ({reason}): {message}")


class Cluster:
    """One API client plus the namespace the command works in."""

    def __init__(self, api: client.ApiClient, namespace: str, target: Target) -> None:
        self.api = api
        self.namespace = namespace
        self.target = target
        self.custom: Any = client.CustomObjectsApi(api)
        self.core: Any = client.CoreV1Api(api)
        self.timeout = target.request_timeout

    @classmethod
    async def connect(cls, target: Target) -> "Cluster":
        configuration = client.Configuration()
        namespace = target.namespace
        try:
            if _in_cluster(target):
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                namespace = namespace or _service_account_namespace()
            else:
                await config.load_kube_config(
                    config_file=target.kubeconfig,
                    context=target.context,
                    client_configuration=configuration,
                )
                namespace = namespace or _kubeconfig_namespace(target.kubeconfig, target.context)
        except (config.ConfigException, OSError, TypeError, KeyError) as exc:
            raise PluginError(f"cannot load the kubeconfig: {exc}") from None
        return cls(client.ApiClient(configuration), namespace or "default", target)

    async def close(self) -> None:
        await self.api.close()

    @property
    def server(self) -> str:
        return str(self.api.configuration.host)

    # --- JobTriggers ------------------------------------------------------------------------------

    async def list_triggers(self, *, all_namespaces: bool = False, selector: str | None = None) -> list[Any]:
        kwargs: dict[str, Any] = {"_request_timeout": self.timeout}
        if selector:
            kwargs["label_selector"] = selector
        try:
            if all_namespaces:
                result = await self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
            else:
                result = await self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, **kwargs
                )
        except ApiException as exc:
            raise api_error(exc, f"cannot list {PLURAL}") from None
        return sorted(
            result.get("items", []),
            key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
        )

    async def get_trigger(self, name: str) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=self.timeout
            )
        except ApiException as exc:
            raise api_error(exc, f'{CRD_NAME} "{name}" not found') from None
        return obj

    async def patch_trigger(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = await self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                dict(patch),
                _content_type="application/merge-patch+json",
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            raise api_error(exc, f'{CRD_NAME} "{name}" not found') from None
        return obj

    # --- around them ------------------------------------------------------------------------------

    async def events_for(self, namespace: str, uid: str) -> list[Any]:
        try:
            result = await self.core.list_namespaced_event(
                namespace, field_selector=f"involvedObject.uid={uid}", _request_timeout=self.timeout
            )
        except ApiException as exc:
            raise api_error(exc, "cannot list events") from None
        return sorted(result.items, key=_event_time)

    async def secret_value(self, namespace: str, name: str, key: str) -> str:
        import base64

        try:
            secret = await self.core.read_namespaced_secret(name, namespace, _request_timeout=self.timeout)
        except ApiException as exc:
            raise api_error(exc, f'secrets "{name}" not found') from None
        data = secret.data or {}
        if key not in data:
            raise PluginError(f'secret "{namespace}/{name}" has no key "{key}"')
        return base64.b64decode(data[key]).decode("utf-8", errors="replace")

    async def operator_deployments(self, namespace: str | None = None) -> list[Any]:
        """The chart's operator Deployments: in `namespace`, else anywhere the user may list them."""
        apps: Any = client.AppsV1Api(self.api)
        try:
            if namespace:
                result = await apps.list_namespaced_deployment(
                    namespace, label_selector=OPERATOR_SELECTOR, _request_timeout=self.timeout
                )
            else:
                result = await apps.list_deployment_for_all_namespaces(
                    label_selector=OPERATOR_SELECTOR, _request_timeout=self.timeout
                )
        except ApiException as exc:
            raise api_error(exc, "cannot list deployments") from None
        return list(result.items)


def arg_value(args: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in a container's command line."""
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def container_args(deployment: Any) -> list[str]:
    out: list[str] = []
    for container in deployment.spec.template.spec.containers or []:
        out += [*(container.command or []), *(container.args or [])]
    return out


def container_env(deployment: Any, name: str) -> str | None:
    for container in deployment.spec.template.spec.containers or []:
        for env in container.env or []:
            if env.name == name and env.value:
                return str(env.value)
    return None


def _event_time(event: Any) -> str:
    for value in (event.last_timestamp, event.event_time, event.first_timestamp):
        if value is not None:
            return str(value.isoformat())
    return ""

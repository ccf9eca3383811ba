"""Kopf handlers: hand every referenced Secret's watch event to the registry, and nothing else.

Kopf runs the Secret watch (with its reconnects and login), the liveness probe and the cleanup,
through raw event handlers only: they write nothing, so Kopf keeps nothing in any object. JobTriggers
are watched by `trigger_watch.JobTriggerWatch`, which costs far less per event; the registry decides
what an event means, and owns finalizers, status, retries and Events.
"""

from typing import Any

import kopf

from portico.operator.kube_access import KubeAccess, in_cluster_credentials
from portico.operator.registry import TriggerRegistry


def operator_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.idle_timeout = 0.5
    return settings


def register(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.login(registry=registry)
    def login(memo: Any, settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
        access: KubeAccess = memo.access
        if not access.in_cluster:
            return kopf.login_with_kubeconfig(memo=memo, settings=settings, **kwargs)
        pod = in_cluster_credentials()
        return kopf.ConnectionInfo(
            server=pod.server,
            token=pod.token,
            ca_path=pod.ca_path,
            default_namespace=pod.namespace,
            trust_env=settings.networking.trust_env,
        )

    def is_referenced(namespace: str | None, name: str, memo: Any, **_: Any) -> bool:
        triggers: TriggerRegistry = memo.triggers
        return triggers.references_secret(namespace or "", name)

    @kopf.on.event("", "v1", "secrets", when=is_referenced, registry=registry)
    async def secret_changed(
        event: kopf.RawEvent, namespace: str | None, name: str, memo: Any, **_: Any
    ) -> None:
        triggers: TriggerRegistry = memo.triggers
        obj: dict[str, Any] = dict(event["object"])
        data = None if event.get("type") == "DELETED" else (obj.get("data") or {})
        await triggers.secret_changed(namespace or "", name, data)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: Any, **_: Any) -> None:
        await memo.shutdown()

    @kopf.on.probe(id="triggers", registry=registry)
    def probe(memo: kopf.Memo, **_: Any) -> int:
        triggers: TriggerRegistry = memo.triggers
        return len(triggers.running())

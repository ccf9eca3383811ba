"""Kopf handlers: parse the resource, hand it to the registry, return nothing.

Nothing is returned into `status` (the API server would prune it: the status schema is ours), and
Kopf's own progress and diff-base live in annotations under our group, not in user-visible fields.
"""

import logging
from typing import Any

import kopf

from portico.operator.registry import Resource, TriggerRegistry
from portico.operator.resource import GROUP, PLURAL, VERSION

logger = logging.getLogger(__name__)
FINALIZER = f"{GROUP}/finalizer"


def operator_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.posting.enabled = False
    settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings


def register(registry: kopf.OperatorRegistry) -> None:
    selector = kopf.Selector(GROUP, VERSION, PLURAL)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.resume(selector, registry=registry)
    @kopf.on.create(selector, registry=registry)
    @kopf.on.update(selector, registry=registry)
    async def reconcile(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        triggers: TriggerRegistry = memo.triggers
        await triggers.apply(Resource.from_body(body))

    @kopf.on.delete(selector, registry=registry)
    async def delete(uid: str, memo: kopf.Memo, **_: Any) -> None:
        triggers: TriggerRegistry = memo.triggers
        await triggers.remove(uid)

    def is_referenced(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> bool:
        triggers: TriggerRegistry = memo.triggers
        return triggers.references_secret(namespace, name)

    @kopf.on.event("", "v1", "secrets", when=is_referenced, registry=registry)
    async def secret_changed(event: kopf.RawEvent, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
        triggers: TriggerRegistry = memo.triggers
        data = None if event["type"] == "DELETED" else (event["object"].get("data") or {})
        await triggers.secret_changed(namespace, name, data)

    @kopf.on.probe(id="triggers", registry=registry)
    def probe(memo: kopf.Memo, **_: Any) -> int:
        triggers: TriggerRegistry = memo.triggers
        return len(triggers.running())

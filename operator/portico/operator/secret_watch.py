"""The Secrets each trigger depends on, and which triggers a Secret change concerns.

A trigger reads its Secrets when it starts (the broker URL, the DSN), or at each use (a webhook's HMAC
key): the first kind is rebuilt when the Secret changes, the second sees a rotation by itself. Either
waits for a Secret that does not exist yet, and starts at once when it appears.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from portico.domain.trigger import SecretRef
from portico.operator.kube import SecretCache
from portico.operator.managed import ManagedTrigger
from portico.ports.trigger_source import TriggerSource


class SecretWatch:
    def __init__(self, secrets: SecretCache, sources: Mapping[str, TriggerSource[Any]]) -> None:
        self.secrets = secrets
        self.sources = sources

    async def depend(
        self, managed: ManagedTrigger, source_refs: Sequence[SecretRef], target_refs: Sequence[SecretRef]
    ) -> None:
        """Record what the trigger about to start reads, and make sure each value is there. Raises
        `SecretNotFoundError` for a missing Secret or key; the dependency stays, so its appearance
        retries the start."""
        namespace = managed.ref.namespace
        refs = [*source_refs, *target_refs]
        managed.secrets = frozenset((namespace, r.name) for r in refs)
        managed.target_secrets = frozenset((namespace, r.name) for r in target_refs)
        for r in refs:
            if not self.secrets.known(namespace, r.name):
                await self.secrets.load(namespace, r.name)
            self.secrets.get(namespace, r)

    @staticmethod
    def references(triggers: Iterable[ManagedTrigger], namespace: str, name: str) -> bool:
        return any((namespace, name) in m.secrets for m in triggers)

    def changed(
        self,
        triggers: Iterable[ManagedTrigger],
        namespace: str,
        name: str,
        data: Mapping[str, str] | None,
    ) -> list[ManagedTrigger]:
        """Store the Secret's new `data` (None: deleted) and return the triggers to rebuild: those
        that read it at start (or through their target), and those that failed waiting for it."""
        self.secrets.update(namespace, name, data)
        rebuild = []
        for managed in triggers:
            if (namespace, name) not in managed.secrets:
                continue
            live = managed.source is not None and self.sources[managed.source].reads_secrets_live
            if managed.phase == "Failed" or not live or (namespace, name) in managed.target_secrets:
                rebuild.append(managed)
        return rebuild

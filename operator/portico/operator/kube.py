"""The operator's own Kubernetes API calls (status patches, finalizers and labels, Events, Secrets),
over one shared kubernetes-asyncio client. The JobTrigger watch is `trigger_watch`."""

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from portico.domain.trigger import SecretRef, TriggerRef
from portico.operator.finalizers import FinalizerWriter
from portico.operator.resource import GROUP, KIND, PLURAL, VERSION
from portico.operator.status import ConflictError, ObjectStatus, ResourceGoneError, StatusPatcher
from portico.ports.trigger_events import EventType
from portico.ports.trigger_source import SecretNotFoundError, SecretResolver
from portico.sources.common.rate_limit import TokenBucket

logger = logging.getLogger(__name__)

REPORTING_COMPONENT = "portico-operator"


class JobTriggerWriter(StatusPatcher, FinalizerWriter):
    def __init__(self, api: client.ApiClient, *, field_manager: str | None = None) -> None:
        self.custom: Any = client.CustomObjectsApi(api)
        self.field_manager = field_manager
        """Names the replica in `managedFields` of the status it writes (who wrote what, per replica)."""

    async def set_finalizers(
        self,
        ref: TriggerRef,
        finalizers: list[str],
        resource_version: str,
        labels: Mapping[str, str] | None = None,
    ) -> ObjectStatus | None:
        metadata: dict[str, Any] = {"finalizers": finalizers, "resourceVersion": resource_version}
        if labels:
            metadata["labels"] = dict(labels)
        try:
            obj = await self._patch_metadata(ref, metadata)
        except ApiException as exc:
            if exc.status in (404, 409):
                logger.debug("finalizer update of %s skipped (%s); the next event retries", ref, exc.status)
                return None
            raise
        return ObjectStatus(obj.get("status") or {}, obj["metadata"]["resourceVersion"])

    async def set_labels(self, ref: TriggerRef, labels: Mapping[str, str]) -> None:
        try:
            await self._patch_metadata(ref, {"labels": dict(labels)})
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def _patch_metadata(self, ref: TriggerRef, metadata: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the object's metadata; returns the object as written."""
        obj: dict[str, Any] = await self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            ref.namespace,
            PLURAL,
            ref.name,
            {"metadata": metadata},
            _content_type="application/merge-patch+json",
        )
        return obj

    async def patch_status(
        self, ref: TriggerRef, patch: dict[str, Any], resource_version: str | None = None
    ) -> ObjectStatus:
        body: dict[str, Any] = {"status": patch}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            obj = await self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                ref.namespace,
                PLURAL,
                ref.name,
                body,
                _content_type="application/merge-patch+json",
                **({"field_manager": self.field_manager[:128]} if self.field_manager else {}),
            )
        except ApiException as exc:
            if exc.status == 404:
                raise ResourceGoneError(str(ref)) from None
            if exc.status == 409:
                raise ConflictError(str(ref)) from None
            raise
        return ObjectStatus(obj.get("status") or {}, obj["metadata"]["resourceVersion"])

    async def read_status(self, ref: TriggerRef) -> ObjectStatus:
        try:
            obj = await self.custom.get_namespaced_custom_object(
                GROUP, VERSION, ref.namespace, PLURAL, ref.name
            )
        except ApiException as exc:
            if exc.status == 404:
                raise ResourceGoneError(str(ref)) from None
            raise
        return ObjectStatus(obj.get("status") or {}, obj["metadata"]["resourceVersion"])


class EventSink(ABC):
    """Where the registry sends Kubernetes Events; `record` never blocks."""

    @abstractmethod
    def record(self, ref: TriggerRef, type: EventType, reason: str, message: str) -> None: ...

    def forget(self, ref: TriggerRef) -> None:
        """The object is gone: drop any per-object state."""


class EventRecorder(EventSink):
    """Posts Kubernetes Events on JobTriggers, in the background and rate-limited per object, so a
    trigger failing in a tight loop cannot flood the API server.

    Identical events (same object, reason and message) within `dedupe_seconds` are counted on the
    existing Event instead of creating new ones; beyond `burst` events per object, one more is allowed
    every `refill_seconds`, the rest are dropped (and logged at debug level).
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        burst: int = 10,
        refill_seconds: float = 10.0,
        dedupe_seconds: float = 300.0,
        host: str = "",
    ) -> None:
        self.core: Any = client.CoreV1Api(api)
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.dedupe_seconds = dedupe_seconds
        self.host = host
        self._buckets: dict[str, TokenBucket] = {}
        self._recent: dict[tuple[str, str, str], tuple[float, str, int]] = {}
        self._queue: asyncio.Queue[tuple[TriggerRef, EventType, str, str]] = asyncio.Queue(maxsize=1000)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.posted = 0

    def record(self, ref: TriggerRef, type: EventType, reason: str, message: str) -> None:
        if not self._allow(ref.uid or str(ref)):
            self.dropped += 1
            return
        try:
            self._queue.put_nowait((ref, type, reason, message[:1024]))
        except asyncio.QueueFull:
            self.dropped += 1

    def _allow(self, key: str) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(
                1 / self.refill_seconds, self.burst, clock=time.monotonic
            )
        return bucket.try_take() == 0

    def forget(self, ref: TriggerRef) -> None:
        self._buckets.pop(ref.uid or str(ref), None)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="event-recorder")

    async def close(self, drain_seconds: float = 5.0) -> None:
        """Post what is queued (for at most `drain_seconds`), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), drain_seconds)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._post(*item)
            except Exception as exc:
                logger.warning("could not post event %s on %s: %s", item[2], item[0], exc)
            finally:
                self._queue.task_done()

    async def _post(self, ref: TriggerRef, type: EventType, reason: str, message: str) -> None:
        now = datetime.now(UTC)
        key = (ref.uid, reason, message)
        recent = self._recent.get(key)
        mono = time.monotonic()
        if recent is not None and mono - recent[0] < self.dedupe_seconds:
            _, name, count = recent
            self._recent[key] = (recent[0], name, count + 1)
            with contextlib.suppress(ApiException):
                await self.core.patch_namespaced_event(
                    name, ref.namespace, {"count": count + 1, "lastTimestamp": now.isoformat()}
                )
                self.posted += 1
                return
        name = f"{ref.name}.{uuid.uuid4().hex[:12]}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ref.namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "type": type,
            "reason": reason,
            "message": message,
            "source": {"component": REPORTING_COMPONENT, "host": self.host},
            "reportingComponent": REPORTING_COMPONENT,
            "reportingInstance": self.host or REPORTING_COMPONENT,
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        }
        await self.core.create_namespaced_event(ref.namespace, body)
        self.posted += 1
        self._recent[key] = (mono, name, 1)
        if len(self._recent) > 10_000:
            cutoff = mono - self.dedupe_seconds
            self._recent = {k: v for k, v in self._recent.items() if v[0] >= cutoff}


class SecretCache:
    """Secret values the operator's triggers reference, kept current by the Secret watch.

    Reads are synchronous dictionary lookups (a webhook checks its HMAC key per request); a Secret is
    fetched once when a trigger first needs it, and then updated by watch events.
    """

    def __init__(self, api: client.ApiClient | None) -> None:
        self.core: Any = client.CoreV1Api(api) if api is not None else None
        self._data: dict[tuple[str, str], dict[str, str] | None] = {}

    async def load(self, namespace: str, name: str) -> None:
        if self.core is None:
            self._data.setdefault((namespace, name), None)
            return
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                self._data[(namespace, name)] = None
                return
            raise
        self.update(namespace, name, secret.data or {})

    def update(self, namespace: str, name: str, data: Mapping[str, str] | None) -> None:
        """Store a Secret's base64 `data` as seen by a read or a watch event (None: deleted)."""
        if data is None:
            self._data[(namespace, name)] = None
            return
        decoded = {}
        for key, value in data.items():
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                decoded[key] = base64.b64decode(value).decode()
        self._data[(namespace, name)] = decoded

    def known(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self._data

    def get(self, namespace: str, ref: SecretRef) -> str:
        data = self._data.get((namespace, ref.name))
        if data is None:
            raise SecretNotFoundError(ref, namespace, "the Secret does not exist")
        if ref.key not in data:
            raise SecretNotFoundError(ref, namespace, "the Secret has no such key")
        return data[ref.key]

    def resolver(self, namespace: str) -> SecretResolver:
        return _NamespacedSecrets(self, namespace)


class _NamespacedSecrets(SecretResolver):
    def __init__(self, cache: SecretCache, namespace: str) -> None:
        self.cache = cache
        self.namespace = namespace

    def get(self, ref: SecretRef) -> str:
        return self.cache.get(self.namespace, ref)


async def read_json(call: Awaitable[Any]) -> dict[str, Any]:
    """The body of an API call made with `_preload_content=False`; a status outside 2xx raises
    `ApiException` as the client would."""
    response = await call
    try:
        data = await response.read()
    finally:
        response.release()
    if not 200 <= response.status <= 299:
        raise ApiException(status=response.status, reason=response.reason)
    result: dict[str, Any] = json.loads(data)
    return result

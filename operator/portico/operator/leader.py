"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it.

Exactly one replica holds the Lease and runs the single-active sources (schedules, queues, polling,
files); every replica serves webhooks. A holder renews every `retry_period`; if it cannot renew within
`renew_deadline` it steps down on its own, before `lease_duration` runs out for the others. A graceful
shutdown releases the Lease so another replica takes over within one retry period.

Expiry is judged by when *this* replica last saw the record change, never by comparing clocks
across machines.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

logger = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class LeaseSettings:
    name: str = "portico-operator"
    namespace: str = "default"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def _micro_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        identity: str,
        settings: LeaseSettings,
        *,
        on_started_leading: Callback,
        on_stopped_leading: Callback,
    ) -> None:
        self.coordination: Any = client.CoordinationV1Api(api)
        self.identity = identity
        self.settings = settings
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.is_leader = False
        self._observed: tuple[str | None, str | None] = (None, None)
        self._observed_at = 0.0
        self._last_renew = 0.0
        self._task: asyncio.Task[None] | None = None
        self.transitions = 0
        self.follower_period = max(0.1, settings.retry_period / 4)
        """Followers look at the Lease four times per retry period, so they see the last renewal (and
        then the expiry) of a crashed leader within a fraction of a period: a crash fail-over takes
        about the lease duration plus half a second, not plus two retry periods."""

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="leader-election")

    async def close(self, *, release: bool = True) -> None:
        """Stop electing; step down (callbacks run) and, if `release`, hand the Lease over at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.is_leader:
            await self._step_down()
            if release:
                await self._release()

    async def _run(self) -> None:
        s = self.settings
        while True:
            try:
                ok = await self._try_acquire_or_renew()
            except Exception as exc:
                logger.warning("lease %s/%s: %s", s.namespace, s.name, exc)
                ok = False
            now = time.monotonic()
            if ok:
                self._last_renew = now
                if not self.is_leader:
                    self.is_leader = True
                    self.transitions += 1
                    logger.info("became the leader (lease %s/%s)", s.namespace, s.name)
                    await self.on_started_leading()
            elif self.is_leader and now - self._last_renew > s.renew_deadline:
                logger.warning("could not renew the lease for %.0fs: stepping down", now - self._last_renew)
                await self._step_down()
            delay = s.retry_period if self.is_leader else self.follower_period * random.uniform(1.0, 1.2)
            await asyncio.sleep(delay)

    async def _step_down(self) -> None:
        self.is_leader = False
        try:
            await self.on_stopped_leading()
        except Exception:
            logger.exception("error while stepping down")

    def _lease(self, spec: dict[str, Any], resource_version: str | None = None) -> dict[str, Any]:
        """A Lease body; with `resource_version`, a replace that fails if someone else wrote first."""
        metadata: dict[str, Any] = {"name": self.settings.name, "namespace": self.settings.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def _spec(self, *, acquire_time: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.settings.lease_duration)),
            "acquireTime": acquire_time,
            "renewTime": _micro_time(datetime.now(UTC)),
            "leaseTransitions": transitions,
        }

    async def _try_acquire_or_renew(self) -> bool:
        s = self.settings
        now_text = _micro_time(datetime.now(UTC))
        try:
            lease = await self.coordination.read_namespaced_lease(s.name, s.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            spec = self._spec(acquire_time=now_text, transitions=0)
            body = self._lease(spec)
            try:
                await self.coordination.create_namespaced_lease(s.namespace, body)
            except ApiException as create_exc:
                if create_exc.status == 409:
                    return False
                raise
            self._observe((self.identity, spec["renewTime"]))
            return True

        spec = lease.spec
        holder = spec.holder_identity or None
        renew = spec.renew_time.isoformat() if spec.renew_time else None
        if (holder, renew) != self._observed:
            self._observe((holder, renew))
        duration = float(spec.lease_duration_seconds or s.lease_duration)
        expired = time.monotonic() > self._observed_at + duration
        if holder and holder != self.identity and not expired:
            return False
        changing_hands = holder != self.identity
        acquire = now_text if changing_hands or not spec.acquire_time else _micro_time(spec.acquire_time)
        transitions = (spec.lease_transitions or 0) + (1 if changing_hands and holder else 0)
        new_spec = self._spec(acquire_time=acquire, transitions=transitions)
        body = self._lease(new_spec, lease.metadata.resource_version)
        try:
            await self.coordination.replace_namespaced_lease(s.name, s.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        self._observe((self.identity, new_spec["renewTime"]))
        return True

    def _observe(self, record: tuple[str | None, str | None]) -> None:
        self._observed = record
        self._observed_at = time.monotonic()

    async def _release(self) -> None:
        s = self.settings
        try:
            lease = await self.coordination.read_namespaced_lease(s.name, s.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            released = {
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": _micro_time(datetime.now(UTC)),
                "acquireTime": None,
                "leaseTransitions": lease.spec.lease_transitions or 0,
            }
            body = self._lease(released, lease.metadata.resource_version)
            await self.coordination.replace_namespaced_lease(s.name, s.namespace, body)
            logger.info("released the lease %s/%s", s.namespace, s.name)
        except ApiException as exc:
            logger.warning("could not release the lease: %s", exc)

"""`portico operator`: wires the adapters, the JobTrigger watch and Kopf, and runs until SIGTERM.

Startup order matters: sources open (the webhook server binds) before the JobTrigger watch resumes
existing triggers; shutdown is the reverse: the watch stops first, then every trigger is stopped
gracefully within `--stop-timeout` before the final status flush.
"""

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

import kopf

# Kopf derives an identity from the login name unless given one, and a container's numeric user has no
# passwd entry: the operator always passes its own (`--id`, POD_NAME, or the host name).
from kopf._core.engines.peering import Identity
from kubernetes_asyncio.client import ApiClient

from portico.adapters.job_creator.http import HttpJobCreator
from portico.logs import setup_logging
from portico.operator.handlers import operator_settings, register
from portico.operator.kube import EventRecorder, JobTriggerWriter, SecretCache
from portico.operator.kube_access import KubeAccess, KubeConfigError, create_api_client, resolve_kube_access
from portico.operator.leader import LeaderElector, LeaseSettings
from portico.operator.metrics import MetricsServer, TriggerCollector
from portico.operator.registry import TriggerRegistry
from portico.operator.settings import OperatorSettings, SettingsError
from portico.operator.sharding.coordinator import ShardCoordinator, ShardSettings
from portico.operator.sharding.lease_thread import LeaseThread, on_loop
from portico.operator.sharding.leases import KubeLeaseStore
from portico.operator.sources import create_sources
from portico.operator.status import StatusWriter
from portico.operator.targets import create_targets
from portico.operator.trigger_watch import JobTriggerWatch

logger = logging.getLogger(__name__)


async def operate(
    settings: OperatorSettings, access: KubeAccess, *, stop_flag: asyncio.Event | None = None
) -> None:
    if access.kubeconfig is not None:
        os.environ["KUBECONFIG"] = access.kubeconfig  # where Kopf's own login looks
    api = await create_api_client(access)
    job_creator = HttpJobCreator(settings.queue_url, token=settings.queue_token)
    sources = create_sources(settings)
    lease_thread = LeaseThread() if settings.shards else None
    lease_api = None
    if lease_thread is not None:
        lease_thread.start()
        lease_api = await lease_thread.call(create_api_client(access, connections=4))
    shards = shard_coordinator(settings, lease_api) if lease_api is not None else None
    writer = JobTriggerWriter(api, field_manager=f"portico-operator/{settings.identity}")
    status_writer = StatusWriter(writer, interval=settings.status_interval)
    events = EventRecorder(api, host=settings.identity)
    triggers = TriggerRegistry(
        sources=sources,
        job_creator=job_creator,
        status_writer=status_writer,
        events=events,
        secrets=SecretCache(api),
        finalizers=writer,
        stop_timeout=settings.stop_timeout,
        leading=not settings.leader_election and not settings.shards,
        targets=create_targets(settings.queue_url, api),
        owner=shards.owns_uid if shards is not None else None,
        shards=settings.shards or None,
    )
    trigger_watch = JobTriggerWatch(
        api, settings.namespaces, triggers.observe, shards=settings.shards or None
    )
    if shards is not None:
        run_shards(shards, triggers, trigger_watch)
    elector = None
    if settings.leader_election and shards is None:
        elector = LeaderElector(
            api,
            settings.identity,
            LeaseSettings(
                name=settings.lease_name,
                namespace=settings.lease_namespace,
                lease_duration=settings.lease_duration,
                renew_deadline=settings.renew_deadline,
                retry_period=settings.retry_period,
            ),
            on_started_leading=lambda: triggers.set_leading(True),
            on_stopped_leading=lambda: triggers.set_leading(False),
        )
    collector = TriggerCollector(triggers, status_writer, events, elector, shards, trigger_watch)
    metrics = MetricsServer(settings.metrics_host, settings.metrics_port, collector)
    kopf_registry = kopf.OperatorRegistry()
    register(kopf_registry)
    opened: list[Any] = []
    stopped = False

    async def shutdown() -> None:
        """Graceful stop, run by Kopf's cleanup activity once its watchers have stopped (and again,
        as a no-op, on the way out): hand leadership over, stop every trigger, flush status."""
        nonlocal stopped
        if stopped:
            return
        stopped = True
        await trigger_watch.stop(settings.stop_timeout)
        logger.info("operator stopping: stopping %d triggers", len(triggers))
        if elector is not None:
            await elector.close(release=True)
        if shards is not None and lease_thread is not None:
            await lease_thread.call(shards.close(release=True))
        await triggers.stop_all()
        for source in reversed(opened):
            try:
                await source.close()
            except Exception:
                logger.exception("error closing the %s source", source.name)
        await status_writer.close()
        await events.close()

    try:
        for source in sources.values():
            await source.open()
            opened.append(source)
        await status_writer.start()
        await events.start()
        await metrics.start()
        if elector is not None:
            await elector.start()
        if shards is not None and lease_thread is not None:
            await lease_thread.call(shards.start())
        trigger_watch.start()
        logger.info(
            "operator starting",
            extra={"namespaces": ",".join(settings.namespaces) or "*", "identity": settings.identity},
        )
        await kopf.operator(
            registry=kopf_registry,
            settings=operator_settings(),
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=f"http://{settings.health_host}:{settings.health_port}/healthz",
            memo=kopf.Memo(triggers=triggers, access=access, shutdown=shutdown),
            identity=Identity(settings.identity),
            stop_flag=stop_flag,
        )
    finally:
        await shutdown()
        await metrics.close()
        await job_creator.close()
        await api.close()
        if lease_thread is not None:
            if lease_api is not None:
                await lease_thread.call(lease_api.close())
            lease_thread.stop()
        logger.info("operator stopped")


def shard_coordinator(settings: OperatorSettings, api: ApiClient) -> ShardCoordinator:
    """The coordinator whose shard Leases decide which triggers this replica runs (`--shards N`); `api`
    belongs to the lease thread's loop."""
    return ShardCoordinator(
        KubeLeaseStore(api, settings.lease_namespace, settings.lease_name),
        settings.identity,
        ShardSettings(
            prefix=settings.lease_name,
            shards=settings.shards,
            lease_duration=settings.lease_duration,
            renew_deadline=settings.renew_deadline,
            retry_period=settings.retry_period,
        ),
    )


def run_shards(coordinator: ShardCoordinator, triggers: TriggerRegistry, watch: JobTriggerWatch) -> None:
    """Gaining a shard watches its triggers and starts them; losing one stops them and flushes their
    status first, then stops watching them (on this, the main loop, while the coordinator waits on the
    lease thread)."""
    main = asyncio.get_running_loop()

    def uids(shards: frozenset[int]) -> set[str]:
        return {uid for uid in triggers.known_uids() if coordinator.shard_of(uid) in shards}

    async def acquired(shards: frozenset[int]) -> None:
        watch.watch_shards(shards)
        await triggers.take_over(uids(shards))

    async def released(shards: frozenset[int]) -> None:
        await triggers.hand_over(uids(shards))
        await triggers.forget(await watch.unwatch_shards(shards))

    coordinator.on_acquired = on_loop(main, acquired)
    coordinator.on_released = on_loop(main, released)


def run_operator(args: argparse.Namespace) -> int:
    """Exit status 2, with one line on stderr, for settings it cannot start with (no queue URL, an
    unreadable token file, no way to reach the API server)."""
    setup_logging(args.log_format, args.log_level)
    try:
        settings = OperatorSettings.from_args(args)
        access = resolve_kube_access(settings.kubeconfig)
        asyncio.run(operate(settings, access))
    except (SettingsError, KubeConfigError) as exc:
        print(f"portico operator: {exc}", file=sys.stderr)
        return 2
    return 0

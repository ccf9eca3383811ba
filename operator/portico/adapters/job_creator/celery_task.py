"""The `celery` target: every job becomes a Celery task message (protocol 2), published with kombu to
RabbitMQ or Redis, for Python teams whose workers already run Celery.

The task name is the job type (or what `taskNames` maps it to), the payload becomes the task's kwargs,
and the task id is a UUID derived from the job's idempotency key, so every retry of one job carries the
same id. On RabbitMQ a message counts as accepted once the broker confirmed it (publisher confirms); on
Redis once it is in the list. An id already published is not published again, by this creator, a new
one after a restart, or another replica: on Redis a marker key (`portico:celery:<task id>`) says so; on
RabbitMQ a ledger stream that receives every task with the same publish, read under per-shard claims
(celery_rabbitmq, celery_ledger).

kombu is synchronous: publishing runs on a few threads, each with its own broker connection, so the
event loop never blocks.
"""

import asyncio
import json
import reprlib
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import kombu
import kombu.exceptions
from pydantic import Field

from portico.adapters.job_creator.celery_ledger import LEDGER, LedgerUnavailableError, StreamLedger
from portico.adapters.job_creator.celery_rabbitmq import RabbitMQPublisher, ShardBusyError
from portico.domain.model import SpecModel
from portico.domain.trigger import SecretRef
from portico.ports.job_creator import Job, JobCreationError, JobCreator
from portico.ports.job_target import JobTarget, TargetContext
from portico.ports.job_trigger import TriggerStartError

TASK_ID_NAMESPACE = uuid.UUID("6f1c4d1e-4a1b-5c8e-9d0f-7a6b5c4d3e2f")
MARKER_PREFIX = "portico:celery:"
PENDING_SECONDS = 60
PUBLISHED_SECONDS = 7 * 24 * 3600


def task_id(idempotency_key: str) -> str:
    """The task id of a job: a UUID (version 5) of its idempotency key."""
    return str(uuid.uuid5(TASK_ID_NAMESPACE, idempotency_key))


def redacted_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def task_message(
    task: str, task_uuid: str, kwargs: dict[str, Any], *, origin: str, metadata: Mapping[str, str]
) -> tuple[Any, dict[str, Any]]:
    """Body and headers of a Celery protocol 2 task message."""
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": task_uuid,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_uuid,
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": reprlib.repr(kwargs),
        "origin": origin,
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
        "portico_metadata": dict(metadata),
    }
    body: tuple[list[Any], dict[str, Any], dict[str, Any]] = (
        [],
        kwargs,
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    )
    return body, headers


class CeleryJobCreator(JobCreator):
    """A `JobCreator` that publishes Celery tasks. Connection trouble is retried (kombu's `ensure`)
    within `deadline`; then the job counts as not accepted (retryable)."""

    def __init__(
        self,
        broker_url: str,
        *,
        task_names: Mapping[str, str] | None = None,
        queue: str | None = None,
        origin: str = "portico",
        scope: str = "",
        ledger: str = LEDGER,
        deadline: float = 30.0,
        threads: int = 8,
        remember: int = 10_000,
    ) -> None:
        scheme = urlsplit(broker_url).scheme
        if scheme not in ("amqp", "amqps", "pyamqp", "redis", "rediss"):
            raise ValueError(f"the broker URL must be amqp(s):// or redis(s)://, not {scheme or 'empty'}://")
        self.broker = redacted_url(broker_url)
        """Without credentials, so it is safe to show in messages."""
        self.task_names = dict(task_names or {})
        self.queue = queue
        self.origin = f"{origin}@{socket.gethostname()}"
        self._deadline = deadline
        self._uses_redis = scheme in ("redis", "rediss")
        options: dict[str, Any] = {"confirm_publish": True} if not self._uses_redis else {}
        self._connection = kombu.Connection(
            broker_url, connect_timeout=min(5.0, deadline), transport_options=options
        )
        self._pool = self._connection.Pool(limit=threads)
        self._broker_errors: tuple[type[BaseException], ...] = (
            kombu.exceptions.KombuError,
            OSError,
            ConnectionError,
            *self._connection.connection_errors,
            *self._connection.channel_errors,
        )
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="celery-publish")
        self._redis: Any = None
        if self._uses_redis:
            import redis

            self._redis = redis.Redis.from_url(broker_url, socket_timeout=min(10.0, deadline))
        self._rabbitmq: RabbitMQPublisher | None = None
        if not self._uses_redis:
            ledger_reader = StreamLedger(self._connection, name=ledger, scope=scope)
            self._rabbitmq = RabbitMQPublisher(self._connection, ledger_reader, lanes=threads)
        self._remember = remember
        self._published: OrderedDict[str, Job] = OrderedDict()
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._close_sync)

    def _close_sync(self) -> None:
        self._threads.shutdown(wait=True)
        if self._rabbitmq is not None:
            self._rabbitmq.close()
            self._rabbitmq.ledger.close()
        self._pool.force_close_all()
        self._connection.release()
        if self._redis is not None:
            self._redis.close()

    async def create_job(
        self,
        job_type: str,
        payload: dict[str, Any],
        queue_name: str = "default",
        priority: int = 0,
        metadata: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        metadata, idempotency_key = self.with_context(metadata, idempotency_key)
        if self._closed:
            raise JobCreationError("the job creator is closed", retryable=False)
        key = idempotency_key if idempotency_key is not None else f"random/{uuid.uuid4()}"
        known = self._published.get(key)
        if known is not None:
            self._published.move_to_end(key)
            return known.model_copy(update={"existing": True})
        task = self.task_names.get(job_type, job_type)
        queue = self.queue or queue_name
        what = f"publishing task {task!r} to queue {queue!r} on {self.broker}"
        try:
            json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise JobCreationError(f"{what}: the payload is not valid JSON: {exc}", retryable=False) from None
        tid = task_id(key)
        body, headers = task_message(task, tid, payload, origin=self.origin, metadata=metadata or {})
        try:
            existing = await asyncio.wait_for(self._publish(tid, queue, body, headers), self._deadline)
        except TimeoutError:
            raise JobCreationError(
                f"{what}: no confirmation within {self._deadline:.0f}s", retryable=True
            ) from None
        except self._broker_errors as exc:
            detail = str(exc).replace(self._connection.as_uri(include_password=True), self.broker)
            raise JobCreationError(f"{what}: {type(exc).__name__}: {detail}"[:500], retryable=True) from None
        except (_InFlight, ShardBusyError):
            raise JobCreationError(
                f"{what}: task {tid} is being published by another attempt", retryable=True
            ) from None
        except LedgerUnavailableError as exc:
            raise JobCreationError(f"{what}: {exc}", retryable=True) from None
        job = Job(
            id=tid,
            job_type=job_type,
            queue_name=queue,
            payload=payload,
            priority=priority,
            metadata=metadata or {},
            idempotency_key=idempotency_key,
            created_at=datetime.now(UTC),
        )
        if self._remember > 0:
            self._published[key] = job
            if len(self._published) > self._remember:
                self._published.popitem(last=False)
        job.existing = existing
        return job

    async def _publish(self, tid: str, queue: str, body: Any, headers: dict[str, Any]) -> bool:
        """Publish; True if the task had been published before."""
        if self._rabbitmq is not None:
            exchange = kombu.Exchange(queue, "direct", durable=True)
            deadline = time.monotonic() + self._deadline
            return await self._rabbitmq.publish(tid, exchange, queue, body, headers, deadline)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, self._publish_redis, tid, queue, body, headers)

    def _publish_redis(self, tid: str, queue: str, body: Any, headers: dict[str, Any]) -> bool:
        marker = MARKER_PREFIX + tid
        if not self._redis.set(marker, "pending", nx=True, ex=PENDING_SECONDS):
            if self._redis.get(marker) == b"published":
                return True
            raise _InFlight
        try:
            exchange = kombu.Exchange(queue, "direct", durable=True)
            declare = [kombu.Queue(queue, exchange, routing_key=queue, durable=True)]
            with self._pool.acquire(block=True, timeout=self._deadline) as connection:
                producer = connection.Producer()
                producer.publish(
                    body,
                    exchange=exchange,
                    routing_key=queue,
                    declare=declare,
                    serializer="json",
                    headers=headers,
                    correlation_id=tid,
                    delivery_mode=2,
                    retry=True,
                    retry_policy={
                        "max_retries": 3,
                        "interval_start": 0.1,
                        "interval_step": 0.5,
                        "interval_max": 2.0,
                    },
                )
        except BaseException:
            self._redis.delete(marker)
            raise
        self._redis.set(marker, "published", ex=PUBLISHED_SECONDS)
        return False

    async def get_job(self, job_id: str | uuid.UUID) -> Job | None:
        return None


class _InFlight(Exception):
    pass


class CeleryTargetSpec(SpecModel):
    """Publish every job as a Celery task (message protocol 2) to RabbitMQ or Redis, for existing Celery
    workers. The payload becomes the task's kwargs; the task id is derived from the job's idempotency
    key."""

    broker_url_secret_ref: SecretRef = Field(
        description="Secret key holding the broker URL: amqp://user:password@host:5672/vhost or "
        "redis://:password@host:6379/0, as the Celery workers use it."
    )
    task_names: dict[str, str] = Field(
        default_factory=dict,
        description="Task name per job type; a job type not listed is used as the task name.",
    )
    queue: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="The Celery queue to publish to (Celery's default is `celery`); default: the job's "
        "queue.",
    )
    timeout_seconds: float = Field(
        default=30.0, gt=0, le=300, description="How long one publish may take, retries included."
    )


class CeleryTarget(JobTarget[CeleryTargetSpec]):
    name: ClassVar[str] = "celery"
    spec_model: ClassVar[type[SpecModel]] = CeleryTargetSpec

    def secret_refs(self, spec: CeleryTargetSpec) -> Sequence[SecretRef]:
        return (spec.broker_url_secret_ref,)

    def build(self, spec: CeleryTargetSpec, context: TargetContext) -> JobCreator:
        url = context.secrets.get(spec.broker_url_secret_ref).strip()
        try:
            return CeleryJobCreator(
                url,
                task_names=spec.task_names,
                queue=spec.queue,
                origin=f"portico/{context.ref}",
                scope=str(context.ref),
                deadline=spec.timeout_seconds,
            )
        except ValueError as exc:
            raise TriggerStartError(
                f"spec.target.celery.brokerUrlSecretRef: {exc}", reason="InvalidTarget", retryable=False
            ) from None

"""The `kubernetesJob` target: every job becomes a `batch/v1` Job in the trigger's namespace, made from
a `jobTemplate` as a CronJob's.

The Job's name is derived from the job's idempotency key, so a retry, a redelivery, a restart or a
fail-over that creates it again meets `AlreadyExists`: the Job that exists is returned with `existing`
set, and no second one is made. The Job carries the key in an annotation, so a Job of the same name
that this trigger did not create is refused instead of being mistaken for its own.

The job reaches the containers two ways (both on by default): `PORTICO_JOB_*` environment variables,
and a JSON file mounted from the pod's own annotation through the downward API. The annotation keeps
the Job one self-contained object (no ConfigMap to create first, own, clean up and grant RBAC for; it
goes when the Job goes), at the price of the annotation size limit (256 KiB), checked before creating.
"""

import asyncio
import hashlib
import json
import logging
import random
import re
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from portico.adapters.job_creator.kubernetes_job_spec import KubernetesJobTargetSpec
from portico.domain.model import SpecModel
from portico.domain.trigger import TriggerRef
from portico.ports.job_creator import Job, JobCreationError, JobCreator, JobStatus
from portico.ports.job_target import JobTarget, TargetContext
from portico.ports.job_trigger import TriggerStartError

logger = logging.getLogger(__name__)

PREFIX = "triggers.portico.dev"
UID_LABEL = f"{PREFIX}/trigger-uid"
KEY_ANNOTATION = f"{PREFIX}/idempotency-key"
TRIGGER_ANNOTATION = f"{PREFIX}/trigger"
TYPE_ANNOTATION = f"{PREFIX}/job-type"
JOB_ANNOTATION = f"{PREFIX}/job"
VOLUME = "portico-job"
MOUNT_PATH = "/etc/portico"
FILE_NAME = "job.json"
MAX_ANNOTATION_BYTES = 256 * 1024 - 4096
"""The API server's limit on all annotations together, less room for the template's own."""
NAME_PREFIX_LENGTH = 40
_NOT_NAME = re.compile(r"[^a-z0-9-]+")
_strict_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def job_name(trigger_name: str, idempotency_key: str) -> str:
    """`<trigger name, up to 40 characters>-<10 hex digits of sha256(key)>`: at most 51 characters, so
    the pods' names and the `job-name` label stay within their 63, like a CronJob's Jobs."""
    base = _NOT_NAME.sub("-", trigger_name.lower())[:NAME_PREFIX_LENGTH].strip("-") or "job"
    digest = hashlib.sha256(idempotency_key.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{base}-{digest}"


def _finished(job: Any) -> str | None:
    for condition in (job.status.conditions if job.status else None) or []:
        if condition.status == "True" and condition.type in ("Complete", "Failed"):
            return str(condition.type)
    return None


def _job_status(job: Any) -> JobStatus:
    finished = _finished(job)
    if finished == "Complete":
        return JobStatus.COMPLETED
    if finished == "Failed":
        return JobStatus.FAILED
    if job.status is not None and (job.status.active or 0) > 0:
        return JobStatus.RUNNING
    return JobStatus.PENDING


class KubernetesJobCreator(JobCreator):
    """Creates one batch/v1 Job per job, named from its idempotency key. API errors that may pass
    (connection trouble, 5xx, 429) are retried with exponential backoff and full jitter until
    `deadline`; other refusals are final."""

    def __init__(
        self,
        api: client.ApiClient,
        spec: KubernetesJobTargetSpec,
        *,
        trigger: TriggerRef,
        deadline: float = 30.0,
        backoff_base: float = 0.1,
        backoff_max: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        if not trigger.namespace:
            raise ValueError("a Kubernetes Job target needs the trigger's namespace")
        self.batch = client.BatchV1Api(api)
        self.spec = spec
        self.trigger = trigger
        self.namespace = trigger.namespace
        self._deadline = deadline
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._template = spec.job_template.model_dump(mode="json", by_alias=True, exclude_none=True)
        self._pruning: asyncio.Task[None] | None = None
        self._prune_again = False

    async def close(self) -> None:
        task, self._pruning = self._pruning, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def manifest(
        self,
        name: str,
        job_type: str,
        payload: dict[str, Any],
        queue_name: str,
        priority: int,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> dict[str, Any]:
        """The Job object to create."""
        what = f"creating a {job_type!r} Job"
        try:
            payload_json = _strict_json.encode(payload)
            metadata_json = _strict_json.encode(metadata)
        except (TypeError, ValueError) as exc:
            raise JobCreationError(f"{what}: the payload is not valid JSON: {exc}", retryable=False) from None
        template = json.loads(json.dumps(self._template))
        meta = template.get("metadata") or {}
        job_spec = template["spec"]
        pod = job_spec["template"]
        pod_meta = pod.setdefault("metadata", {})
        pod_spec = pod["spec"]
        labels = (
            {**meta.get("labels", {}), UID_LABEL: self.trigger.uid}
            if self.trigger.uid
            else meta.get("labels", {})
        )
        job_meta: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "labels": labels,
            "annotations": {
                **meta.get("annotations", {}),
                KEY_ANNOTATION: idempotency_key,
                TYPE_ANNOTATION: job_type,
                TRIGGER_ANNOTATION: str(self.trigger),
            },
        }
        if self.trigger.uid:
            job_meta["ownerReferences"] = [
                {
                    "apiVersion": f"{PREFIX}/v1alpha1",
                    "kind": "JobTrigger",
                    "name": self.trigger.name,
                    "uid": self.trigger.uid,
                }
            ]
            pod_meta.setdefault("labels", {})[UID_LABEL] = self.trigger.uid
        if self.spec.ttl_seconds_after_finished is not None:
            job_spec["ttlSecondsAfterFinished"] = self.spec.ttl_seconds_after_finished
        env = [
            {"name": "PORTICO_JOB_NAME", "value": name},
            {"name": "PORTICO_JOB_TYPE", "value": job_type},
            {"name": "PORTICO_JOB_QUEUE", "value": queue_name},
            {"name": "PORTICO_JOB_PRIORITY", "value": str(priority)},
            {"name": "PORTICO_JOB_PAYLOAD", "value": payload_json},
            {"name": "PORTICO_JOB_METADATA", "value": metadata_json},
            {"name": "PORTICO_IDEMPOTENCY_KEY", "value": idempotency_key},
        ]
        if self.spec.payload_file:
            document = _strict_json.encode(
                {
                    "name": name,
                    "job_type": job_type,
                    "queue_name": queue_name,
                    "priority": priority,
                    "payload": payload,
                    "metadata": metadata,
                    "idempotency_key": idempotency_key,
                }
            )
            if len(document.encode()) > MAX_ANNOTATION_BYTES:
                raise JobCreationError(
                    f"{what}: the job is {len(document.encode())} bytes as JSON, more than the "
                    f"{MAX_ANNOTATION_BYTES} a Pod annotation can hold (set payloadFile: false)",
                    retryable=False,
                    status=413,
                )
            pod_meta.setdefault("annotations", {})[JOB_ANNOTATION] = document
            field_path = f"metadata.annotations['{JOB_ANNOTATION}']"
            pod_spec.setdefault("volumes", []).append(
                {
                    "name": VOLUME,
                    "downwardAPI": {"items": [{"path": FILE_NAME, "fieldRef": {"fieldPath": field_path}}]},
                }
            )
        for container in pod_spec["containers"]:
            if self.spec.payload_env:
                container["env"] = [*container.get("env", []), *env]
            if self.spec.payload_file:
                mount = {"name": VOLUME, "mountPath": MOUNT_PATH, "readOnly": True}
                container["volumeMounts"] = [*container.get("volumeMounts", []), mount]
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": job_meta, "spec": job_spec}

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
        key = idempotency_key if idempotency_key is not None else f"random/{uuid.uuid4()}"
        name = job_name(self.trigger.name, key)
        body = self.manifest(name, job_type, payload, queue_name, priority, metadata, key)
        what = f"creating Job {self.namespace}/{name}"
        existing = False
        try:
            created = await self._call(what, self.batch.create_namespaced_job, self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise self._rejected(what, exc) from None
            created = await self._call(what, self.batch.read_namespaced_job, name, self.namespace)
            found = (created.metadata.annotations or {}).get(KEY_ANNOTATION)
            if found != key:
                message = f"{what}: a Job of that name exists that this trigger did not create for this job"
                raise JobCreationError(message, retryable=False, status=409) from None
            existing = True
        if not existing:
            self._schedule_prune()
        job = Job(
            id=name,
            job_type=job_type,
            queue_name=queue_name,
            payload=payload,
            priority=priority,
            metadata=metadata,
            idempotency_key=idempotency_key,
            status=_job_status(created),
            created_at=created.metadata.creation_timestamp or datetime.now(UTC),
        )
        job.existing = existing
        return job

    async def get_job(self, job_id: str | uuid.UUID) -> Job | None:
        name = str(job_id)
        try:
            found = await self._call(
                f"reading Job {self.namespace}/{name}", self.batch.read_namespaced_job, name, self.namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise self._rejected(f"reading Job {self.namespace}/{name}", exc) from None
        annotations = found.metadata.annotations or {}
        return Job(
            id=name,
            job_type=annotations.get(TYPE_ANNOTATION, ""),
            status=_job_status(found),
            idempotency_key=annotations.get(KEY_ANNOTATION),
            created_at=found.metadata.creation_timestamp or datetime.now(UTC),
        )

    async def check(self) -> None:
        """A server-side dry run of a Job from the template: the API server validates the whole Job and
        Pod spec and the operator's permission to create it, and nothing is stored."""
        body = self.manifest(job_name(self.trigger.name, "check"), "check", {}, "default", 0, {}, "check")
        what = f"checking the Job template in namespace {self.namespace!r}"
        try:
            await self._call(what, self._dry_run, body)
        except ApiException as exc:
            error = self._rejected(what, exc)
            if exc.status == 403:
                raise TriggerStartError(
                    f"{error} (the operator needs create, get, list and delete on batch/v1 Jobs here; "
                    "the chart grants them with rbac.kubernetesJobs=true)",
                    reason="Forbidden",
                ) from None
            raise TriggerStartError(str(error), reason="InvalidJobTemplate", retryable=False) from None
        except JobCreationError as exc:
            raise TriggerStartError(str(exc), reason="TargetUnavailable") from None

    async def _dry_run(self, body: Any, *, _request_timeout: float) -> Any:
        return await self.batch.create_namespaced_job(
            self.namespace, body, dry_run="All", _request_timeout=_request_timeout
        )

    def _rejected(self, what: str, exc: ApiException) -> JobCreationError:
        reason = exc.reason or "refused"
        try:
            detail = json.loads(exc.body).get("message", "") if exc.body else ""
        except (ValueError, AttributeError):
            detail = ""
        message = f"{what}: the API server answered {exc.status} {reason}" + (
            f": {detail[:300]}" if detail else ""
        )
        return JobCreationError(message, retryable=False, status=exc.status)

    async def _call(self, what: str, method: Any, *args: Any) -> Any:
        """One API call, retried while the failure may pass; ApiExceptions that will not are raised."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await method(*args, _request_timeout=min(10.0, self._deadline))
            except ApiException as exc:
                if exc.status != 429 and (exc.status or 0) < 500:
                    raise
                reason = f"HTTP {exc.status} from the API server"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            delay = self._rng.uniform(0.0, min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1)))
            if loop.time() + delay - started >= self._deadline:
                message = (
                    f"{what}: {reason} (gave up after {attempt} attempts in {loop.time() - started:.1f}s)"
                )
                raise JobCreationError(message, retryable=True)
            await asyncio.sleep(delay)

    def _schedule_prune(self) -> None:
        limits = (self.spec.successful_jobs_history_limit, self.spec.failed_jobs_history_limit)
        if all(limit is None for limit in limits) or not self.trigger.uid:
            return
        if self._pruning is not None and not self._pruning.done():
            self._prune_again = True
            return
        self._pruning = asyncio.create_task(self._prune_loop(), name=f"prune Jobs of {self.trigger}")

    async def _prune_loop(self) -> None:
        while True:
            self._prune_again = False
            try:
                await self.prune()
            except Exception as exc:
                logger.warning("pruning the Jobs of %s failed: %s", self.trigger, exc)
            if not self._prune_again:
                return

    async def prune(self) -> list[str]:
        """Delete this trigger's finished Jobs beyond the history limits, oldest first, as a CronJob
        does; returns their names."""
        listed = await self._call(
            f"listing the Jobs of {self.trigger}",
            lambda *, _request_timeout: self.batch.list_namespaced_job(
                self.namespace,
                label_selector=f"{UID_LABEL}={self.trigger.uid}",
                _request_timeout=_request_timeout,
            ),
        )
        by_outcome: dict[str, list[Any]] = {"Complete": [], "Failed": []}
        for job in listed.items:
            outcome = _finished(job)
            if outcome is not None:
                by_outcome[outcome].append(job)
        doomed: list[Any] = []
        for outcome, limit in (
            ("Complete", self.spec.successful_jobs_history_limit),
            ("Failed", self.spec.failed_jobs_history_limit),
        ):
            if limit is None:
                continue
            jobs = sorted(
                by_outcome[outcome],
                key=lambda j: (j.status.completion_time or j.metadata.creation_timestamp, j.metadata.name),
            )
            doomed += jobs[: max(0, len(jobs) - limit)]
        deleted = []
        for job in doomed:
            try:
                await self.batch.delete_namespaced_job(
                    job.metadata.name, self.namespace, propagation_policy="Background"
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
            deleted.append(job.metadata.name)
        return deleted


class KubernetesJobTarget(JobTarget[KubernetesJobTargetSpec]):
    name: ClassVar[str] = "kubernetesJob"
    spec_model: ClassVar[type[SpecModel]] = KubernetesJobTargetSpec

    def __init__(self, api: client.ApiClient | None = None) -> None:
        self.api = api

    def build(self, spec: KubernetesJobTargetSpec, context: TargetContext) -> JobCreator:
        if self.api is None:
            raise TriggerStartError(
                "the kubernetesJob target needs access to the API server",
                reason="InvalidTarget",
                retryable=False,
            )
        return KubernetesJobCreator(self.api, spec, trigger=context.ref)

    async def check(self, spec: KubernetesJobTargetSpec, creator: JobCreator) -> None:
        if isinstance(creator, KubernetesJobCreator):
            await creator.check()

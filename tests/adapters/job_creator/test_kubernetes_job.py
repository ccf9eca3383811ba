"""`KubernetesJobCreator` on the real kube-apiserver. The test control plane runs no controllers and no
kubelet, so what is checked is the Job object the API server stored: its name, spec, env and mounted
job file; finished Jobs are simulated by writing their status as the Job controller would."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes_asyncio import client

from portico.adapters.job_creator.kubernetes_job import (
    JOB_ANNOTATION,
    KEY_ANNOTATION,
    UID_LABEL,
    KubernetesJobCreator,
    KubernetesJobTargetSpec,
    job_name,
)
from portico.domain.trigger import TriggerRef
from portico.ports.job_creator import JobCreationError, JobStatus
from portico.ports.job_trigger import TriggerStartError

TEMPLATE = {
    "metadata": {"labels": {"team": "release"}},
    "spec": {
        "backoffLimit": 2,
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "deploy",
                        "image": "registry.example/deploy:1",
                        "env": [{"name": "A", "value": "1"}],
                    }
                ]
            }
        },
    },
}


def spec(**extra: Any) -> KubernetesJobTargetSpec:
    return KubernetesJobTargetSpec.model_validate({"jobTemplate": TEMPLATE, **extra})


def creator(kube_api: Any, namespace: str, **extra: Any) -> KubernetesJobCreator:
    ref = TriggerRef(name="releases", namespace=namespace, uid="0b5c6f0e-1111-4222-8333-944455556666")
    return KubernetesJobCreator(kube_api, spec(**extra), trigger=ref)


async def test_a_job_becomes_one_batch_job_with_the_job_in_env_and_a_file(
    kube_api: Any, namespace: str
) -> None:
    jobs = creator(kube_api, namespace, ttlSecondsAfterFinished=600)
    job = await jobs.create_job(
        "release.deploy",
        {"tag": "v1.2.0", "notes": "ünï"},
        queue_name="deploys",
        priority=4,
        metadata={"trigger.name": "releases"},
        idempotency_key="webhook/uid/delivery-7",
    )
    assert job.id == job_name("releases", "webhook/uid/delivery-7") and not job.existing
    assert job.status == JobStatus.PENDING
    stored = await client.BatchV1Api(kube_api).read_namespaced_job(job.id, namespace)
    assert len(job.id) <= 52 and job.id.startswith("releases-")
    assert stored.metadata.labels == {"team": "release", UID_LABEL: jobs.trigger.uid}
    assert stored.metadata.annotations[KEY_ANNOTATION] == "webhook/uid/delivery-7"
    assert [(o.kind, o.name, o.uid) for o in stored.metadata.owner_references] == [
        ("JobTrigger", "releases", jobs.trigger.uid)
    ]
    assert stored.spec.ttl_seconds_after_finished == 600 and stored.spec.backoff_limit == 2
    pod = stored.spec.template
    assert pod.spec.restart_policy == "Never"
    [container] = pod.spec.containers
    env = {e.name: e.value for e in container.env}
    assert env["A"] == "1", "the template's own env stays"
    assert json.loads(env["PORTICO_JOB_PAYLOAD"]) == {"tag": "v1.2.0", "notes": "ünï"}
    assert json.loads(env["PORTICO_JOB_METADATA"]) == {"trigger.name": "releases"}
    assert (env["PORTICO_JOB_TYPE"], env["PORTICO_JOB_QUEUE"], env["PORTICO_JOB_PRIORITY"]) == (
        "release.deploy",
        "deploys",
        "4",
    )
    assert env["PORTICO_JOB_NAME"] == job.id and env["PORTICO_IDEMPOTENCY_KEY"] == "webhook/uid/delivery-7"
    [mount] = container.volume_mounts
    assert (mount.mount_path, mount.read_only) == ("/etc/portico", True)
    [volume] = pod.spec.volumes
    [item] = volume.downward_api.items
    assert item.path == "job.json"
    assert item.field_ref.field_path == f"metadata.annotations['{JOB_ANNOTATION}']"
    document = json.loads(pod.metadata.annotations[JOB_ANNOTATION])
    assert (
        document["payload"] == {"tag": "v1.2.0", "notes": "ünï"} and document["job_type"] == "release.deploy"
    )
    assert (await jobs.get_job(job.id)).idempotency_key == "webhook/uid/delivery-7"  # type: ignore[union-attr]
    assert await jobs.get_job("no-such-job") is None


async def test_a_retry_meets_the_existing_job_and_never_makes_a_second(kube_api: Any, namespace: str) -> None:
    first = creator(kube_api, namespace)
    other_process = creator(kube_api, namespace)
    a = await first.create_job("t", {"n": 1}, idempotency_key="schedule/uid/2026-11-28T09:00:00Z")
    b = await other_process.create_job("t", {"n": 1}, idempotency_key="schedule/uid/2026-11-28T09:00:00Z")
    c = await first.create_job("t", {"n": 2}, idempotency_key="schedule/uid/2026-11-29T09:00:00Z")
    assert b.id == a.id and b.existing and not a.existing
    assert c.id != a.id and not c.existing
    listed = await client.BatchV1Api(kube_api).list_namespaced_job(namespace)
    assert sorted(j.metadata.name for j in listed.items) == sorted([a.id, c.id])


async def test_a_foreign_job_of_the_same_name_is_not_taken_for_ours(kube_api: Any, namespace: str) -> None:
    jobs = creator(kube_api, namespace)
    name = job_name("releases", "k")
    foreign = {
        "metadata": {"name": name},
        "spec": TEMPLATE["spec"]
        | {"template": {"spec": {"restartPolicy": "Never", **TEMPLATE["spec"]["template"]["spec"]}}},
    }  # type: ignore[operator]
    await client.BatchV1Api(kube_api).create_namespaced_job(namespace, foreign)
    with pytest.raises(JobCreationError) as caught:
        await jobs.create_job("t", {}, idempotency_key="k")
    assert not caught.value.retryable and "did not create" in str(caught.value)


async def test_an_invalid_template_is_refused_by_the_api_server_as_final(
    kube_api: Any, namespace: str
) -> None:
    bad = {"spec": {"template": {"spec": {"containers": [{"name": "Not_A_Name"}]}}}}
    jobs = KubernetesJobCreator(
        kube_api,
        KubernetesJobTargetSpec.model_validate({"jobTemplate": bad}),
        trigger=TriggerRef("t", namespace),
    )
    with pytest.raises(JobCreationError) as caught:
        await jobs.create_job("t", {}, idempotency_key="k")
    assert caught.value.status == 422 and not caught.value.retryable
    assert "422 Unprocessable Entity" in str(caught.value)


async def test_a_job_too_large_for_the_annotation_is_refused_before_the_api(
    kube_api: Any, namespace: str
) -> None:
    jobs = creator(kube_api, namespace)
    with pytest.raises(JobCreationError) as caught:
        await jobs.create_job("t", {"blob": "x" * 300_000}, idempotency_key="k")
    assert caught.value.status == 413 and "payloadFile: false" in str(caught.value)
    env_only = creator(kube_api, namespace, payloadFile=False)
    job = await env_only.create_job("t", {"blob": "x" * 300_000}, idempotency_key="k")
    stored = await client.BatchV1Api(kube_api).read_namespaced_job(job.id, namespace)
    assert not stored.spec.template.spec.volumes


async def finish(kube_api: Any, namespace: str, name: str, outcome: str, at: datetime) -> None:
    """Write the status the Job controller writes when a Job ends."""
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    start = (at - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if outcome == "Complete":
        conditions = [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": stamp},
            {"type": "Complete", "status": "True", "lastTransitionTime": stamp},
        ]
        status = {"startTime": start, "completionTime": stamp, "succeeded": 1, "conditions": conditions}
    else:
        conditions = [
            {"type": "FailureTarget", "status": "True", "lastTransitionTime": stamp},
            {"type": "Failed", "status": "True", "lastTransitionTime": stamp},
        ]
        status = {"startTime": start, "failed": 1, "conditions": conditions}
    await client.BatchV1Api(kube_api).patch_namespaced_job_status(name, namespace, {"status": status})


async def test_finished_jobs_beyond_the_history_limits_are_deleted_oldest_first(
    kube_api: Any, namespace: str
) -> None:
    jobs = creator(kube_api, namespace, successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1)
    created = [(await jobs.create_job("t", {}, idempotency_key=f"run-{i}")).id for i in range(7)]
    await jobs.close()
    now = datetime.now(UTC)
    for i, name in enumerate(created[:4]):
        await finish(kube_api, namespace, name, "Complete", now + timedelta(minutes=i))
    for i, name in enumerate(created[4:6]):
        await finish(kube_api, namespace, name, "Failed", now + timedelta(minutes=i))
    deleted = await jobs.prune()
    assert sorted(deleted) == sorted([created[0], created[1], created[4]])
    listed = await client.BatchV1Api(kube_api).list_namespaced_job(namespace)
    remaining = {j.metadata.name for j in listed.items if not j.metadata.deletion_timestamp}
    assert remaining == {created[2], created[3], created[5], created[6]}, "the running Job is never pruned"


async def test_the_check_at_start_dry_runs_the_template(kube_api: Any, namespace: str) -> None:
    await creator(kube_api, namespace).check()
    assert (await client.BatchV1Api(kube_api).list_namespaced_job(namespace)).items == [], "a dry run"
    bad = {"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}
    jobs = KubernetesJobCreator(
        kube_api,
        KubernetesJobTargetSpec.model_validate({"jobTemplate": bad}),
        trigger=TriggerRef("t", namespace),
    )
    with pytest.raises(TriggerStartError) as caught:
        await jobs.check()
    assert caught.value.reason == "InvalidJobTemplate" and not caught.value.retryable
    assert "image" in str(caught.value)

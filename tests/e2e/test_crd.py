"""The CRD on the real API server: what the operator writes survives, what users get wrong is refused
with a message that says what to fix, and `kubectl explain` explains."""

import json
from typing import Any

import pytest

from tests.conftest import Kubectl
from tests.e2e.conftest import trigger_manifest

FULL_STATUS: dict[str, Any] = {
    "phase": "Running",
    "isRunning": True,
    "source": "schedule",
    "target": "queueService",
    "observedGeneration": 1,
    "jobsCreated": 120,
    "errors": 1,
    "lastJobId": "0193f0c1-job",
    "lastJobTime": "2026-11-28T09:00:00Z",
    "lastError": "queue service unavailable (503)",
    "lastScheduleTime": "2026-11-28T09:00:00Z",
    "nextScheduleTime": "2026-11-29T09:00:00Z",
    "skippedRuns": 2,
    "missedRuns": 1,
    "lastRunNow": {"token": "20261128T090000Z-3f9a1c2b", "jobId": "j-2", "time": "2026-11-28T09:00:01Z"},
    "webhookPath": "/hooks/ns/name",
    "webhookRequests": {"202": 120, "401": 3},
    "watchedPath": "/data/incoming",
    "watching": True,
    "pendingFiles": 2,
    "amqpQueue": "job_events",
    "connected": True,
    "messagesRejected": 1,
    "messagesRequeued": 4,
    "lastPollTime": "2026-11-28T09:00:05Z",
    "lastPollRows": 100,
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Running",
            "message": "running",
            "lastTransitionTime": "2026-11-28T08:00:00Z",
            "observedGeneration": 1,
        }
    ],
}


def test_everything_the_operator_writes_survives_a_round_trip(kubectl: Kubectl) -> None:
    from portico.operator.resource_status import status_model
    from portico.sources.catalog import SOURCE_CLASSES

    model_fields = {f.alias for f in status_model(SOURCE_CLASSES).model_fields.values()}
    assert set(FULL_STATUS) == model_fields, "the sample covers every status field"
    kubectl.apply(trigger_manifest("t", {"schedule": {"cron": "0 9 * * *"}}))
    kubectl(
        "patch", "jt", "t", "--subresource=status", "--type=merge", "-p", json.dumps({"status": FULL_STATUS})
    )
    assert kubectl.json("get", "jt", "t")["status"] == FULL_STATUS


def test_defaults_are_applied_by_the_api_server(kubectl: Kubectl) -> None:
    kubectl.apply(trigger_manifest("t", {"schedule": {"cron": "0 9 * * *"}}))
    spec = kubectl.json("get", "jt", "t")["spec"]
    assert spec["job"]["queue"] == "default"
    assert spec["job"]["priority"] == 0
    assert spec["suspend"] is False
    assert spec["schedule"]["timeZone"] == "UTC"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"job": {"type": "x"}}, "exactly one source block must be set"),
        (
            {"job": {"type": "x"}, "schedule": {"cron": "0 9 * * *"}, "webhook": {"auth": {"type": "none"}}},
            "exactly one source block must be set",
        ),
        ({"job": {"type": "x", "priority": 5000}, "schedule": {"cron": "0 9 * * *"}}, "spec.job.priority"),
        ({"job": {"type": ""}, "schedule": {"cron": "0 9 * * *"}}, "spec.job.type"),
        ({"schedule": {"cron": "0 9 * * *"}}, "spec.job: Required value"),
        (
            {"job": {"type": "x"}, "schedule": {"cron": "0 9 * * *"}, "target": {}},
            "exactly one target block must be set",
        ),
        (
            {
                "job": {"type": "x"},
                "schedule": {"cron": "0 9 * * *"},
                "target": {"queueService": {"url": "ftp://q"}},
            },
            "spec.target.queueService.url",
        ),
        (
            {
                "job": {"type": "x"},
                "schedule": {"cron": "0 9 * * *"},
                "target": {"queueService": {}, "cloudEvents": {"url": "http://sink"}},
            },
            "exactly one target block must be set",
        ),
        (
            {
                "job": {"type": "x"},
                "schedule": {"cron": "0 9 * * *"},
                "target": {
                    "kubernetesJob": {"jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}
                },
            },
            "spec.target.kubernetesJob.jobTemplate.spec.template.spec.containers",
        ),
        ({"job": {"type": "x"}, "amqp": {"queue": "q"}}, "spec.amqp.urlSecretRef: Required value"),
        (
            {
                "job": {"type": "x"},
                "amqp": {
                    "urlSecretRef": {"name": "mq", "key": "url"},
                    "queue": "q",
                    "unmappedPolicy": "Ignore",
                },
            },
            "unmappedPolicy Reject or Ignore needs a jobTypeMapping",
        ),
        (
            {"job": {"type": "x"}, "databasePoll": {"table": "t"}},
            "spec.databasePoll.dsnSecretRef: Required value",
        ),
        (
            {
                "job": {"type": "x"},
                "databasePoll": {
                    "dsnSecretRef": {"name": "db", "key": "dsn"},
                    "table": "t",
                    "maxAgeSeconds": 60,
                },
            },
            "createdAtColumn and maxAgeSeconds go together",
        ),
    ],
)
def test_invalid_manifests_are_refused_with_the_reason(
    kubectl: Kubectl, spec: dict[str, Any], expected: str
) -> None:
    manifest = {
        "apiVersion": "triggers.portico.dev/v1alpha1",
        "kind": "JobTrigger",
        "metadata": {"name": "bad"},
        "spec": spec,
    }
    result = kubectl("apply", "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0
    assert expected in result.stderr


def test_unknown_fields_are_refused_not_silently_dropped(kubectl: Kubectl) -> None:
    manifest = trigger_manifest("t", {"schedule": {"cron": "0 9 * * *", "timezone": "UTC"}})
    result = kubectl("apply", "--validate=strict", "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.schedule.timezone"' in result.stderr


def test_payload_keeps_arbitrary_json(kubectl: Kubectl) -> None:
    payload = {
        "report": {
            "type": "daily",
            "columns": ["a", "b"],
            "limit": 10,
            "nested": {"x": [1, {"y": "z"}], "ok": True},
        }
    }
    kubectl.apply(
        trigger_manifest("t", {"schedule": {"cron": "0 9 * * *"}}, job={"type": "r", "payload": payload})
    )
    assert kubectl.json("get", "jt", "t")["spec"]["job"]["payload"] == payload


def test_kubectl_explain_describes_fields(kubectl: Kubectl) -> None:
    out = kubectl("explain", "jobtrigger.spec.schedule").stdout
    assert "cron" in out and "timeZone" in out
    assert "DESCRIPTION" in out or "FIELDS" in out
    job = kubectl("explain", "jobtrigger.spec.job.priority").stdout
    assert "Higher runs first" in job
    target = kubectl("explain", "jobtrigger.spec.target.queueService").stdout
    assert "tokenSecretRef" in target and "default target" in target
    job = kubectl("explain", "jobtrigger.spec.target.kubernetesJob.successfulJobsHistoryLimit").stdout
    assert "succeeded Jobs" in job

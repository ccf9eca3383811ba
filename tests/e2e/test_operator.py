"""The operator against the real kube-apiserver and the real queue service: triggers live and die with
their resources, and status says what is going on."""

import base64
import json
import signal
import time
from typing import Any

from portico.operator.resource import FINALIZER
from tests.conftest import Kubectl, QueueServiceProcess
from tests.e2e.conftest import (
    OperatorFactory,
    list_jobs,
    status_of,
    trigger_manifest,
    wait_for,
)

FAR_FUTURE = {"schedule": {"cron": "0 0 1 1 *"}}


def running(kubectl: Kubectl, name: str, generation: int | None = None) -> dict[str, Any] | None:
    s = status_of(kubectl, name)
    if (
        s.get("phase") == "Running"
        and s.get("isRunning") is True
        and (generation is None or s.get("observedGeneration") == generation)
    ):
        return s
    return None


def events_for(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    items = kubectl.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return list(items)


def test_create_runs_and_delete_stops(kubectl: Kubectl, start_operator: OperatorFactory) -> None:
    op = start_operator()
    kubectl.apply(trigger_manifest("daily", FAR_FUTURE))
    status = wait_for(lambda: running(kubectl, "daily"), timeout=20, message="Running")
    assert status["source"] == "schedule"
    assert status["observedGeneration"] == 1
    assert status["nextScheduleTime"].endswith("Z")
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Running")
    obj = kubectl.json("get", "jt", "daily")
    assert FINALIZER in obj["metadata"]["finalizers"]
    assert not any(k.startswith("kopf.zalando.org") for k in obj["metadata"].get("annotations", {}))
    assert "kopf" not in obj.get("status", {})
    wait_for(
        lambda: any(e["reason"] == "Started" for e in events_for(kubectl, "daily")), message="Started event"
    )

    kubectl("delete", "jt", "daily", "--wait=true", "--timeout=30s")
    assert kubectl("get", "jt", "daily", check=False).returncode != 0
    assert f"trigger {kubectl.namespace}/daily stopped" in op.log()


def test_spec_update_reconfigures_and_metadata_change_does_not(
    kubectl: Kubectl, start_operator: OperatorFactory
) -> None:
    op = start_operator()
    kubectl.apply(trigger_manifest("t", FAR_FUTURE))
    first = wait_for(lambda: running(kubectl, "t"), message="Running")
    kubectl("label", "jt", "t", "team=payments")
    kubectl("annotate", "jt", "t", "note=unrelated")
    time.sleep(1.5)
    assert status_of(kubectl, "t")["conditions"] == first["conditions"]
    assert op.log().count("Reconfigured") == 0

    kubectl.apply(trigger_manifest("t", {"schedule": {"cron": "0 0 1 2 *"}}))
    s = wait_for(lambda: running(kubectl, "t", generation=2), message="generation 2 running")
    assert s["nextScheduleTime"].endswith("-02-01T00:00:00Z")
    wait_for(lambda: any(e["reason"] == "Reconfigured" for e in events_for(kubectl, "t")))


def test_suspend_and_resume(kubectl: Kubectl, start_operator: OperatorFactory) -> None:
    start_operator()
    kubectl.apply(trigger_manifest("t", FAR_FUTURE))
    wait_for(lambda: running(kubectl, "t"), message="Running")
    kubectl("patch", "jt", "t", "--type=merge", "-p", json.dumps({"spec": {"suspend": True}}))
    s = wait_for(
        lambda: (st := status_of(kubectl, "t")).get("phase") == "Suspended" and st, message="Suspended"
    )
    assert s["isRunning"] is False
    assert s["conditions"][0]["status"] == "False"
    kubectl("patch", "jt", "t", "--type=merge", "-p", json.dumps({"spec": {"suspend": False}}))
    wait_for(lambda: running(kubectl, "t", generation=3), message="Running again")


def test_invalid_cron_fails_with_event_and_others_are_unaffected(
    kubectl: Kubectl, start_operator: OperatorFactory
) -> None:
    start_operator()
    kubectl.apply(trigger_manifest("good", FAR_FUTURE))
    kubectl.apply(trigger_manifest("bad", {"schedule": {"cron": "61 * * * *"}}))
    s = wait_for(lambda: (st := status_of(kubectl, "bad")).get("phase") == "Failed" and st, message="Failed")
    assert s["isRunning"] is False
    assert "spec.schedule.cron" in s["lastError"]
    cond = s["conditions"][0]
    assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec")
    warnings = wait_for(lambda: [e for e in events_for(kubectl, "bad") if e["type"] == "Warning"])
    assert warnings[0]["reason"] == "InvalidSpec"
    assert "spec.schedule.cron" in warnings[0]["message"]
    wait_for(lambda: running(kubectl, "good"), message="good trigger running")
    kubectl.apply(trigger_manifest("bad", FAR_FUTURE))
    wait_for(lambda: running(kubectl, "bad", generation=2), message="fixed trigger running")


def test_missing_secret_then_created_recovers(kubectl: Kubectl, start_operator: OperatorFactory) -> None:
    start_operator()
    webhook = {
        "webhook": {
            "auth": {"type": "hmac", "preset": "github", "secretRef": {"name": "gh", "key": "secret"}}
        }
    }
    kubectl.apply(trigger_manifest("hook", webhook))
    s = wait_for(lambda: (st := status_of(kubectl, "hook")).get("phase") == "Failed" and st, message="Failed")
    assert s["conditions"][0]["reason"] == "SecretNotFound"
    assert "'gh'" in s["lastError"]
    secret_value = "it-is-a-secret-value"
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "gh"},
            "data": {"secret": base64.b64encode(secret_value.encode()).decode()},
        }
    )
    s = wait_for(lambda: running(kubectl, "hook"), timeout=15, message="Running after the Secret appeared")
    assert secret_value not in json.dumps(s)
    assert all(secret_value not in e["message"] for e in events_for(kubectl, "hook"))


def test_restart_resumes_every_trigger_and_jobs_flow(
    kubectl: Kubectl, start_operator: OperatorFactory, queue_service_process: QueueServiceProcess
) -> None:
    op = start_operator()
    for i in range(3):
        kubectl.apply(trigger_manifest(f"t{i}", FAR_FUTURE))
    kubectl.apply(
        trigger_manifest(
            "every",
            {"schedule": {"cron": "@every 1s"}},
            job={"type": "e2e.tick", "queue": "ticks", "priority": 7, "payload": {"k": "v"}},
        )
    )
    for i in range(3):
        wait_for(lambda i=i: running(kubectl, f"t{i}"), message=f"t{i} running")
    wait_for(
        lambda: len(list_jobs(queue_service_process.url, queue="ticks")) >= 2, timeout=15, message="ticks"
    )
    assert op.process.stop(signal.SIGTERM) == 0
    assert "operator stopped" in op.log()
    jobs_before = status_of(kubectl, "every")["jobsCreated"]
    assert jobs_before >= 2, "the final flush on stop wrote the counters"

    start_operator()
    for i in range(3):
        wait_for(lambda i=i: running(kubectl, f"t{i}"), message=f"t{i} running after restart")
    wait_for(
        lambda: status_of(kubectl, "every")["jobsCreated"] > jobs_before + 1,
        timeout=15,
        message="counter continues after restart",
    )
    jobs = list_jobs(queue_service_process.url, queue="ticks")
    job = jobs[0]
    assert (job["job_type"], job["priority"], job["payload"]) == ("e2e.tick", 7, {"k": "v"})
    keys = [j["idempotency_key"] for j in jobs]
    assert len(keys) == len(set(keys)), "no scheduled time was enqueued twice"


def test_printer_columns(kubectl: Kubectl, start_operator: OperatorFactory) -> None:
    start_operator()
    kubectl.apply(trigger_manifest("daily", FAR_FUTURE))
    wait_for(lambda: running(kubectl, "daily"), message="Running")
    table = kubectl("get", "jt").stdout.splitlines()
    assert table[0].split() == ["NAME", "SOURCE", "RUNNING", "JOBS", "LAST", "JOB", "PHASE", "AGE"]
    row = table[1].split()
    assert row[:4] == ["daily", "schedule", "true", "0"]
    assert row[-2] == "Running"
    assert "daily" in kubectl("get", "portico").stdout

"""Targets end to end: a JobTrigger applied to the real API server, the real operator process, and the
job arriving in the target's real system."""

import json
import urllib.request
from pathlib import Path

from tests.conftest import Kubectl, QueueServiceProcess
from tests.e2e.conftest import OperatorFactory, list_jobs, status_of, trigger_manifest, wait_for
from tests.e2e.test_sources import post, running, secret


def test_queue_service_target_with_its_own_url_and_token_secret(
    kubectl: Kubectl,
    start_operator: OperatorFactory,
    queue_service_process: QueueServiceProcess,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "team-token"
    token_file.write_text("team-token\n")
    team = QueueServiceProcess(tmp_path / "team.db", tmp_path / "team.log", "--token-file", str(token_file))
    team.start()
    try:
        op = start_operator()
        target = {"queueService": {"url": team.url, "tokenSecretRef": {"name": "team-queue", "key": "token"}}}
        hook = {"webhook": {"auth": {"type": "none"}}}
        kubectl.apply(trigger_manifest("hook", hook, job={"type": "e2e.team"}, target=target))
        failed = wait_for(
            lambda: (s := status_of(kubectl, "hook")).get("phase") == "Failed" and s,
            message="failed: the token Secret does not exist yet",
        )
        assert "team-queue" in failed["lastError"]

        secret(kubectl, "team-queue", "token", "wrong-token")
        status = wait_for(lambda: running(kubectl, "hook"), message="running once the Secret exists")
        assert status["target"] == "queueService"
        url = op.webhook_url + status["webhookPath"]
        body = json.dumps({"job_type": "e2e.team", "payload": {"n": 1}}).encode()

        def send() -> int:
            headers = {"Content-Type": "application/json", "Idempotency-Key": "delivery-1"}
            return post(url, body, headers)[0]

        assert send() == 502, "the team's queue service refuses the wrong token: nothing accepted"
        secret(kubectl, "team-queue", "token", "team-token")
        wait_for(lambda: send() == 202, message="the rotated token reaches the team's queue service")
        assert send() == 202
        request = urllib.request.Request(
            f"{team.url}/v1/jobs?job_type=e2e.team", headers={"Authorization": "Bearer team-token"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            jobs = json.loads(resp.read())["jobs"]
        assert len(jobs) == 1 and jobs[0]["payload"] == {"n": 1}
        assert list_jobs(queue_service_process.url, job_type="e2e.team") == []
        with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        labels = f'namespace="{kubectl.namespace}",source="webhook",target="queueService",trigger="hook"'
        assert f"portico_jobs_created_total{{{labels}}} 1.0" in metrics, metrics[:3000]
        assert "team-token" not in json.dumps(status_of(kubectl, "hook")) + op.log()
    finally:
        team.stop()


def test_a_trigger_without_target_uses_the_operators_queue_service(
    kubectl: Kubectl, start_operator: OperatorFactory, queue_service_process: QueueServiceProcess
) -> None:
    op = start_operator()
    kubectl.apply(
        trigger_manifest("plain", {"webhook": {"auth": {"type": "none"}}}, job={"type": "e2e.plain"})
    )
    status = wait_for(lambda: running(kubectl, "plain"), message="running")
    assert status["target"] == "queueService"
    body = json.dumps({"job_type": "e2e.plain", "payload": {}}).encode()
    assert post(op.webhook_url + status["webhookPath"], body, {"Content-Type": "application/json"})[0] == 202
    assert len(list_jobs(queue_service_process.url, job_type="e2e.plain")) == 1

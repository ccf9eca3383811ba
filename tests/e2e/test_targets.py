"""Targets end to end: a JobTrigger applied to the real API server, the real operator process, and the
job arriving in the target's real system."""

import hashlib
import hmac
import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

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


class Sink:
    """A CloudEvents sink on 127.0.0.1 in a thread: reads each request with the CloudEvents SDK's HTTP
    binding, checks the HMAC signature, and answers `status` (503 to play unavailable)."""

    def __init__(self, hmac_key: bytes) -> None:
        self.status = 503
        self.events: list[Any] = []
        self.invalid: list[str] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items()}
                try:
                    event = from_binary(HTTPMessage(headers=headers, body=body), JSONFormat())
                    message = f"{headers['ce-id']}.{headers['ce-time']}.".encode() + body
                    expected = "sha256=" + hmac.new(hmac_key, message, hashlib.sha256).hexdigest()
                    assert headers.get("Portico-Signature") == expected, "bad signature"
                except Exception as exc:
                    sink.invalid.append(f"{type(exc).__name__}: {exc}")
                    self.send_response(400)
                else:
                    if sink.status < 300:
                        sink.events.append(event)
                    self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_cloud_events_target_webhook_answers_202_only_once_the_sink_accepted(
    kubectl: Kubectl, start_operator: OperatorFactory, queue_service_process: QueueServiceProcess
) -> None:
    sink = Sink(b"sink-signing-key")
    try:
        op = start_operator()
        secret(kubectl, "sink", "hmac", "sink-signing-key")
        target = {
            "cloudEvents": {
                "url": sink.url,
                "hmacSecretRef": {"name": "sink", "key": "hmac"},
                "timeoutSeconds": 2,
            }
        }
        hook = {"webhook": {"auth": {"type": "none"}}}
        kubectl.apply(trigger_manifest("releases", hook, job={"type": "release.published"}, target=target))
        status = wait_for(lambda: running(kubectl, "releases"), message="running")
        assert status["target"] == "cloudEvents"
        url = op.webhook_url + status["webhookPath"]
        body = json.dumps({"job_type": "release.published", "payload": {"tag": "v1"}}).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": "d-1"}

        request = urllib.request.Request(url, data=body, method="POST", headers=headers)
        try:
            urllib.request.urlopen(request, timeout=60)
            raise AssertionError("accepted while the sink is down")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503 and exc.headers["Retry-After"], "the sender is told to retry"
        assert sink.events == []

        sink.status = 202
        assert post(url, body, headers)[0] == 202, "the sender's retry is accepted"
        assert post(url, body, headers)[0] == 202, "a redelivery is answered as accepted"
        assert sink.invalid == []
        source = f"/apis/triggers.portico.dev/v1alpha1/namespaces/{kubectl.namespace}/jobtriggers/releases"
        [event] = sink.events
        assert (event.get_source(), event.get_type()) == (source, "release.published")
        assert "d-1" in event.get_id()
        assert event.get_data() == {"tag": "v1"}
        assert list_jobs(queue_service_process.url) == [], "nothing went to the queue service"
        wait_for(lambda: status_of(kubectl, "releases").get("jobsCreated") == 1, message="counted once")
        assert "sink-signing-key" not in json.dumps(status_of(kubectl, "releases")) + op.log()
    finally:
        sink.close()


def test_kubernetes_job_target_one_job_per_delivery_through_redelivery_and_restart(
    kubectl: Kubectl, start_operator: OperatorFactory, queue_service_process: QueueServiceProcess
) -> None:
    op = start_operator()
    template = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "deploy", "image": "registry.example/deploy:1"}]}}
        }
    }
    target = {"kubernetesJob": {"jobTemplate": template, "ttlSecondsAfterFinished": 3600}}
    hook = {"webhook": {"auth": {"type": "none"}}}
    kubectl.apply(trigger_manifest("releases", hook, job={"type": "release.deploy"}, target=target))
    status = wait_for(lambda: running(kubectl, "releases"), message="running")
    assert status["target"] == "kubernetesJob"
    url = op.webhook_url + status["webhookPath"]
    body = json.dumps({"job_type": "release.deploy", "payload": {"tag": "v2"}}).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": "delivery-1"}
    code, answer = post(url, body, headers)
    assert code == 202
    assert post(url, body, headers) == (202, answer), "a redelivery gets the same Job"

    op.process.stop()
    op = start_operator()
    status = wait_for(lambda: running(kubectl, "releases"), message="running after the restart")
    assert post(op.webhook_url + status["webhookPath"], body, headers) == (202, answer)

    jobs = kubectl.json("get", "jobs.batch")["items"]
    assert [j["metadata"]["name"] for j in jobs] == [answer["job_id"]], "one Job, never a second"
    [job] = jobs
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["PORTICO_JOB_PAYLOAD"]) == {"tag": "v2"}
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    assert job["metadata"]["ownerReferences"][0]["kind"] == "JobTrigger"
    assert list_jobs(queue_service_process.url) == []
    wait_for(lambda: status_of(kubectl, "releases").get("jobsCreated") == 1, message="counted once")


def test_celery_target_a_schedule_sends_tasks_a_celery_worker_runs(
    kubectl: Kubectl, start_operator: OperatorFactory, redis: Any, tmp_path: Path
) -> None:
    from tests.adapters.job_creator.test_celery_task import Worker

    queue = f"celery-{kubectl.namespace}"
    worker = Worker(tmp_path, redis.url(), queue)
    try:
        start_operator()
        secret(kubectl, "celery-broker", "url", redis.url())
        target = {
            "celery": {
                "brokerUrlSecretRef": {"name": "celery-broker", "key": "url"},
                "queue": queue,
                "taskNames": {"report.daily": "reports.build"},
            }
        }
        job = {"type": "report.daily", "payload": {"report": "sales"}}
        kubectl.apply(trigger_manifest("sales", {"schedule": {"cron": "@every 2s"}}, job=job, target=target))
        status = wait_for(lambda: running(kubectl, "sales"), message="running")
        assert status["target"] == "celery"
        runs = worker.wait_runs(2)
        assert all(r["task"] == "reports.build" and r["kwargs"] == {"report": "sales"} for r in runs)
        assert len({r["id"] for r in runs}) == len(runs), "one task per scheduled time"
        assert redis.password not in json.dumps(status_of(kubectl, "sales"))
    finally:
        worker.stop()

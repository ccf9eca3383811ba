"""The seed's whole path with real processes: a JobTrigger (operator) creates jobs in the queue service,
and `portico worker` with the shipped example handler takes them pending → running → completed."""

import json
import signal
import urllib.request
from pathlib import Path

from portico.testing.processes import free_port, worker_command
from tests.conftest import Kubectl, QueueServiceProcess
from tests.e2e.conftest import OperatorFactory, Process, list_jobs, status_of, trigger_manifest, wait_for


def test_a_triggers_jobs_are_completed_by_portico_worker(
    kubectl: Kubectl,
    start_operator: OperatorFactory,
    queue_service_process: QueueServiceProcess,
    tmp_path: Path,
) -> None:
    start_operator()
    kubectl.apply(
        trigger_manifest(
            "every",
            {"schedule": {"cron": "@every 1s"}},
            job={"type": "report.daily", "queue": "e2e-reports", "payload": {"sleep_seconds": 1.5}},
        )
    )
    metrics_port = free_port()
    worker = Process(
        worker_command(
            queue_url=queue_service_process.url,
            handlers="portico.worker.examples:handlers",
            queues=("e2e-reports",),
            concurrency=2,
            metrics_port=metrics_port,
            extra=("--id", "e2e-worker"),
        ),
        tmp_path / "worker.log",
    ).start()
    try:
        worker.wait_for_log("worker metrics listening on")
        wait_for(
            lambda: list_jobs(queue_service_process.url, queue="e2e-reports", status="running"),
            timeout=30,
            message="a running job",
        )
        completed = wait_for(
            lambda: list_jobs(queue_service_process.url, queue="e2e-reports", status="completed"),
            timeout=30,
            message="a completed job",
        )
        job = completed[0]
        assert (job["worker"], job["attempts"], job["job_type"]) == ("e2e-worker", 1, "report.daily")
        assert job["metadata"]["trigger.name"] == "every"
        last = status_of(kubectl, "every")["lastJobId"]
        wait_for(
            lambda: any(
                j["id"] == last and j["status"] == "completed"
                for j in list_jobs(queue_service_process.url, queue="e2e-reports")
            ),
            timeout=30,
            message="the trigger's last job completed",
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert 'portico_worker_jobs_total{job_type="*",outcome="completed"}' not in metrics
        assert 'portico_worker_jobs_total{job_type="other",outcome="completed"}' in metrics
        lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
        assert any(
            entry.get("job_id") == job["id"] and entry.get("outcome") == "completed" for entry in lines
        )
    finally:
        assert worker.stop(signal.SIGTERM) == 0

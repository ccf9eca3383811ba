"""Two operator replicas: one leader runs the single-active sources, both serve webhooks; a crash or a
graceful stop of the leader hands over without losing or doubling a scheduled run."""

import itertools
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Kubectl, QueueServiceProcess
from tests.e2e.conftest import (
    Operator,
    OperatorFactory,
    list_jobs,
    post_json,
    status_of,
    trigger_manifest,
    wait_for,
)

LEASE = ("--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "0.5")


def lease_holder(kubectl: Kubectl) -> str | None:
    result = kubectl("get", "lease", "portico-operator", "-o", "json", check=False)
    if result.returncode != 0:
        return None
    holder: str | None = json.loads(result.stdout)["spec"].get("holderIdentity")
    return holder


def two_replicas(start_operator: OperatorFactory) -> dict[str, Operator]:
    return {name: start_operator("--id", name, *LEASE) for name in ("replica-a", "replica-b")}


def ticks_are_exactly_once(queue_url: str) -> list[datetime]:
    jobs = list_jobs(queue_url, queue="ticks")
    times = sorted(datetime.fromisoformat(j["metadata"]["scheduled_time"]) for j in jobs)
    assert len(times) == len(set(times)), "a scheduled second was enqueued twice"
    gaps = [(a, b) for a, b in itertools.pairwise(times) if b - a != timedelta(seconds=1)]
    assert gaps == [], f"scheduled seconds missing between {gaps}"
    return times


def test_crash_and_graceful_failover_keep_every_run_exactly_once(
    kubectl: Kubectl, start_operator: OperatorFactory, queue_service_process: QueueServiceProcess
) -> None:
    replicas = two_replicas(start_operator)
    leader = wait_for(lambda: lease_holder(kubectl), message="a leader")
    kubectl.apply(
        trigger_manifest(
            "ticker",
            {"schedule": {"cron": "@every 1s", "catchUp": "All", "startingDeadlineSeconds": 60}},
            job={"type": "e2e.tick", "queue": "ticks"},
        )
    )
    wait_for(
        lambda: len(list_jobs(queue_service_process.url, queue="ticks")) >= 3, timeout=20, message="ticks"
    )

    replicas[leader].process.stop(signal.SIGKILL)
    killed = time.monotonic()
    survivor = next(n for n in replicas if n != leader)
    wait_for(lambda: lease_holder(kubectl) == survivor, timeout=10, interval=0.05, message="take-over")
    assert time.monotonic() - killed <= 4 + 1.5, "taken over within the lease duration"
    before = len(list_jobs(queue_service_process.url, queue="ticks"))
    wait_for(
        lambda: len(list_jobs(queue_service_process.url, queue="ticks")) >= before + 3,
        timeout=15,
        message="the survivor fires",
    )
    ticks_are_exactly_once(queue_service_process.url)

    restarted = start_operator("--id", leader, *LEASE)
    time.sleep(1)
    assert lease_holder(kubectl) == survivor
    replicas[survivor].process.stop(signal.SIGTERM)
    stopped = time.monotonic()
    wait_for(lambda: lease_holder(kubectl) == leader, timeout=10, interval=0.05, message="graceful hand-over")
    assert time.monotonic() - stopped <= 3 + 1, "graceful hand-over within about 3 s"
    wait_for(lambda: status_of(kubectl, "ticker").get("isRunning") is True, message="still running")
    before = len(list_jobs(queue_service_process.url, queue="ticks"))
    wait_for(lambda: len(list_jobs(queue_service_process.url, queue="ticks")) >= before + 2, timeout=15)
    restarted.process.stop(signal.SIGTERM)
    times = ticks_are_exactly_once(queue_service_process.url)
    status = status_of(kubectl, "ticker")
    assert status["jobsCreated"] >= len(times) - 1, "counters survived two hand-overs"


def test_webhooks_are_served_by_every_replica_through_a_crash(
    kubectl: Kubectl, start_operator: OperatorFactory, queue_service_process: QueueServiceProcess
) -> None:
    replicas = two_replicas(start_operator)
    wait_for(lambda: lease_holder(kubectl), message="a leader")
    kubectl.apply(trigger_manifest("hook", {"webhook": {"auth": {"type": "none"}}}, job={"type": "e2e.hook"}))
    path = wait_for(lambda: status_of(kubectl, "hook").get("webhookPath"), message="webhook path")
    urls = {name: op.webhook_url + path for name, op in replicas.items()}
    for url in urls.values():
        wait_for(lambda url=url: post_json(url, {"job_type": "e2e.hook", "payload": {}}) == 202, message=url)

    leader = lease_holder(kubectl)
    survivor = next(n for n in replicas if n != leader)
    results: list[int] = []
    stop = threading.Event()

    def send_to_survivor() -> None:
        i = 0
        while not stop.is_set():
            results.append(post_json(urls[survivor], {"job_type": "e2e.hook", "payload": {"i": i}}))
            i += 1
            time.sleep(0.02)

    sender = threading.Thread(target=send_to_survivor)
    sender.start()
    time.sleep(1)
    assert leader is not None
    replicas[leader].process.stop(signal.SIGKILL)
    time.sleep(3)
    stop.set()
    sender.join()
    assert results and all(code == 202 for code in results), f"codes seen: {sorted(set(results))}"

    wait_for(lambda: lease_holder(kubectl) == survivor, timeout=10, message="take-over")
    accepted = len(list_jobs(queue_service_process.url, job_type="e2e.hook"))
    wait_for(
        lambda: status_of(kubectl, "hook").get("jobsCreated") == accepted,
        timeout=10,
        message=f"jobsCreated == {accepted} (counts from both replicas)",
    )


def test_metrics_endpoint(kubectl: Kubectl, start_operator: OperatorFactory) -> None:
    op = start_operator("--no-leader-election")
    kubectl.apply(trigger_manifest("tick", {"schedule": {"cron": "@every 1s"}}, job={"type": "e2e.tick"}))
    kubectl.apply(trigger_manifest("hook", {"webhook": {"auth": {"type": "none"}}}, job={"type": "e2e.hook"}))
    ns = kubectl.namespace
    tick = (("namespace", ns), ("source", "schedule"), ("target", "queueService"), ("trigger", "tick"))

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    # Fires on time are timed; a slow start's catch-up run is not, so wait for two timed fires.
    wait_for(
        lambda: scrape().get(("portico_schedule_fire_lateness_seconds_count", tick), 0) >= 2,
        message="two timed fires",
    )
    path = wait_for(lambda: status_of(kubectl, "hook").get("webhookPath"), message="webhook path")
    assert post_json(op.webhook_url + path, {"job_type": "e2e.hook", "payload": {}}) == 202
    assert post_json(op.webhook_url + path, "not an object") in (400, 415)  # type: ignore[arg-type]
    samples = scrape()
    assert (
        samples[
            (
                "portico_jobs_created_total",
                (("namespace", ns), ("source", "webhook"), ("target", "queueService"), ("trigger", "hook")),
            )
        ]
        == 1
    )
    assert (
        samples[("portico_webhook_requests_total", (("code", "202"), ("namespace", ns), ("trigger", "hook")))]
        == 1
    )
    assert samples[("portico_triggers", (("phase", "Running"),))] == 2
    hook = (("namespace", ns), ("source", "webhook"), ("target", "queueService"), ("trigger", "hook"))
    assert samples[("portico_trigger_phase", tuple(sorted((*hook, ("phase", "Running")))))] == 1
    assert samples[("portico_trigger_phase", tuple(sorted((*hook, ("phase", "Failed")))))] == 0
    fires = samples[("portico_schedule_fire_lateness_seconds_count", tick)]
    assert fires >= 2
    bucket = "portico_schedule_fire_lateness_seconds_bucket"
    assert samples[(bucket, tuple(sorted((*tick, ("le", "+Inf")))))] == fires
    assert 0 <= samples[(bucket, tuple(sorted((*tick, ("le", "0.1")))))] <= fires
    assert (
        samples[("portico_webhook_request_duration_seconds_count", (("namespace", ns), ("trigger", "hook")))]
        == 2
    )
    assert ("portico_status_patches_total", ()) in samples
    # The webhook's job, and every timed fire but perhaps the one whose request is still in flight.
    assert samples[("portico_queue_requests_total", (("outcome", "2xx"),))] >= fires
    assert samples[("portico_queue_request_duration_seconds_count", ())] >= fires

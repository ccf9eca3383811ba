"""The chart as a user installs it, on a node that runs its Pods: `helm install` with the project's
image and the bundled queue service, two operator replicas Ready through their probes, a schedule and a
signed GitHub delivery becoming jobs in the queue-service Pod, fail-over after the leader Pod is deleted,
a rolling `helm upgrade`, the GitHub-release example running a Kubernetes Job to completion, and
`helm uninstall` keeping the CRD and the JobTriggers.

The tests run in file order and share one release: each step starts from the state the previous left.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
import yaml

from tests.cluster.conftest import image_values
from tests.cluster.node import Node, NodeError
from tests.conftest import Kubectl
from tests.e2e.conftest import trigger_manifest, wait_for
from tests.helm.conftest import CHART_DIR, Helm, set_args

RELEASE = "portico"
RELEASE_NS = "portico-system"
APPS_NS = "apps"
WEBHOOK_SERVICE = f"{RELEASE}-portico-triggers-operator-webhook"
QUEUE = f"{RELEASE}-portico-triggers-queue"
SCHEDULE_SECONDS = 2
RELEASE_EXAMPLE = CHART_DIR.parents[1] / "examples" / "target-kubernetes-job-github-release.yaml"

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]


@dataclass
class Release:
    node: Node
    kubectl: Kubectl
    helm: Helm
    values: dict[str, Any]
    install_seconds: float

    @property
    def system(self) -> Kubectl:
        return self.kubectl.in_namespace(RELEASE_NS)

    @property
    def apps(self) -> Kubectl:
        return self.kubectl.in_namespace(APPS_NS)

    def service_url(self, name: str) -> str:
        svc = self.system.json("get", "service", name)
        return f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"

    def http(
        self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """A request to a Service address from the node.

        A Pod turns Ready before kube-proxy has written its Service's rules, and until then a connection
        to the Service address is refused: that is retried for up to 30 s, as a client behind a Service
        would retry it.
        """
        deadline = time.monotonic() + 30
        while True:
            try:
                return self.node.http(method, url, body, headers)
            except NodeError as exc:
                if "Connection refused" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def jobs(self, **filters: str) -> list[dict[str, Any]]:
        """Every job in the queue-service Pod's database, through its Service."""
        query = "&".join(f"{k}={v}" for k, v in {**filters, "limit": "500"}.items())
        status, page = self.http(
            "GET",
            f"{self.service_url(QUEUE)}/v1/jobs?{query}",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert status == 200, page
        assert not page.get("next_cursor"), "more than one page of jobs"
        return list(page["jobs"])

    @property
    def token(self) -> str:
        """The queue service's bearer token, from the Secret the chart created."""
        secret = self.system.json("get", "secret", f"{QUEUE}-token")
        return base64.b64decode(next(iter(secret["data"].values()))).decode()

    def operator_pods(self) -> list[dict[str, Any]]:
        pods = self.system.json("get", "pods", "-l", "app.kubernetes.io/component=operator")["items"]
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")]

    def leader(self) -> str:
        leases = self.system.json("get", "leases")["items"]
        holders = [
            lease["spec"].get("holderIdentity") for lease in leases if lease["spec"].get("holderIdentity")
        ]
        assert len(holders) == 1, leases
        return str(holders[0])


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def describe(release: Release) -> str:
    pods = release.system("get", "pods", "-o", "wide", check=False).stdout
    events = release.system("get", "events", "--sort-by=.lastTimestamp", check=False).stdout[-3000:]
    logs = release.system("logs", "-l", "app.kubernetes.io/component=operator", "--tail=40", check=False)
    return f"pods:\n{pods}\nevents:\n{events}\noperator logs:\n{logs.stdout}{logs.stderr}"


def queue_volume(node: Node, kubectl: Kubectl) -> None:
    """A hostPath PersistentVolume for the queue service's claim, as a cluster admin provides storage
    (the node has no dynamic provisioner). Owned by the image's user, which the chart runs as."""
    path = node.data_dir / "volumes" / "queue"
    path.mkdir(parents=True, exist_ok=True)
    import os

    os.chown(path, 65532, 65532)
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": "queue-data"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(path), "type": "Directory"},
            },
        }
    )


@pytest.fixture(scope="module")
def release(node: Node, node_kubectl: Kubectl, node_helm: Helm, image: str) -> Iterator[Release]:
    queue_volume(node, node_kubectl)
    node_kubectl("create", "namespace", APPS_NS)
    values = {
        **image_values(image),
        "queueService.enabled": True,
        "queueService.token.create": True,
        "replicaCount": 2,
        # These steps follow one elected leader; the sharded replicas are tested in tests/e2e.
        "sharding.enabled": False,
    }
    started = time.monotonic()
    rel = Release(node, node_kubectl, node_helm, values, 0.0)
    install = node_helm(
        "install", RELEASE, str(CHART_DIR), "--namespace", RELEASE_NS, "--create-namespace",
        *set_args(values), "--wait", "--timeout", "5m", check=False, timeout=330,
    )  # fmt: skip
    if install.returncode != 0:
        pytest.fail(f"helm install failed: {install.stderr}\n{describe(rel)}", pytrace=False)
    rel.install_seconds = time.monotonic() - started
    print(f"\nhelm install --wait: {rel.install_seconds:.1f} s")
    yield rel


def test_install_runs_two_operator_pods_ready_through_their_probes(release: Release) -> None:
    pods = release.operator_pods()
    assert len(pods) == 2, describe(release)
    for pod in pods:
        assert ready(pod), describe(release)
        container = pod["spec"]["containers"][0]
        assert (
            container["readinessProbe"]["httpGet"]["path"] and container["livenessProbe"]["httpGet"]["path"]
        )
        status = pod["status"]["containerStatuses"][0]
        assert status["restartCount"] == 0, describe(release)
    assert {p["spec"]["nodeName"] for p in pods} == {"portico-node"}
    queue = release.system.json("get", "pods", "-l", "app.kubernetes.io/component=queue-service")["items"]
    assert len(queue) == 1 and ready(queue[0]), describe(release)
    release.leader()


def schedule_times(release: Release) -> list[float]:
    return sorted(
        datetime.fromisoformat(j["metadata"]["scheduled_time"]).timestamp()
        for j in release.jobs(queue="ticks")
    )


def assert_every_run_once(times: list[float]) -> None:
    """Each scheduled time once, and no slot missing between the first and the last."""
    assert len(times) == len(set(times)), f"a run was enqueued twice: {times}"
    expected = list(range(int(times[0]), int(times[-1]) + 1, SCHEDULE_SECONDS))
    assert [int(t) for t in times] == expected, (
        f"runs missing: {sorted(set(expected) - {int(t) for t in times})}"
    )


def test_schedule_trigger_creates_jobs_in_the_queue_service_pod(release: Release) -> None:
    release.apps.apply(
        trigger_manifest(
            "ticks",
            {"schedule": {"cron": f"@every {SCHEDULE_SECONDS}s", "catchUp": "All"}},
            job={"type": "tick", "queue": "ticks"},
        )
    )
    wait_for(lambda: len(release.jobs(queue="ticks")) >= 3, timeout=60, message="3 scheduled jobs")
    jobs = release.jobs(queue="ticks")
    assert jobs[0]["job_type"] == "tick" and jobs[0]["metadata"]["trigger.source"] == "schedule"
    assert_every_run_once(schedule_times(release))


def test_signed_github_delivery_through_the_service_is_one_job(release: Release) -> None:
    signing_key = "gh-" + uuid.uuid4().hex
    release.apps.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "github"},
            "data": {"secret": base64.b64encode(signing_key.encode()).decode()},
        }
    )
    auth = {"type": "hmac", "preset": "github", "secretRef": {"name": "github", "key": "secret"}}
    release.apps.apply(
        trigger_manifest(
            "gh", {"webhook": {"mode": "payload", "auth": auth}}, job={"type": "ci.build", "queue": "ci"}
        )
    )
    path = wait_for(
        lambda: (release.apps.json("get", "jobtrigger", "gh").get("status") or {}).get("webhookPath"),
        timeout=60,
        message="webhook path",
    )
    url = release.service_url(WEBHOOK_SERVICE) + path
    body, headers = github_delivery(signing_key, "push", {"ref": "refs/heads/main", "after": "abc123"})
    # Both replicas serve webhooks once their trigger runs; the Service may pick either.
    status, answer = wait_for(
        lambda: (r := release.http("POST", url, body, headers))[0] != 404 and r,
        timeout=60,
        message="not 404",
    )
    assert status == 202, answer
    # A replica that has not loaded the trigger yet answers 404 (and creates nothing).
    again, answer2 = wait_for(
        lambda: (r := release.http("POST", url, body, headers))[0] != 404 and r,
        timeout=60,
        message="redelivery not 404",
    )
    assert again == 202 and answer2["job_id"] == answer["job_id"], "the redelivery is the same job"
    jobs = release.jobs(queue="ci")
    assert len(jobs) == 1, jobs
    assert jobs[0]["payload"] == {"ref": "refs/heads/main", "after": "abc123"}


def test_deleting_the_leader_pod_hands_over_without_losing_or_repeating_a_run(release: Release) -> None:
    leader = release.leader()
    before = len(release.jobs(queue="ticks"))
    deleted_at = time.monotonic()
    release.system("delete", "pod", leader, "--wait=false")
    new_leader = wait_for(
        lambda: (holder := release.leader()) != leader and holder, timeout=90, message="another leader"
    )
    print(f"\nleader {leader} deleted; {new_leader} leads after {time.monotonic() - deleted_at:.1f} s")
    assert new_leader in {p["metadata"]["name"] for p in release.operator_pods()}
    wait_for(
        lambda: len(release.jobs(queue="ticks")) >= before + 5, timeout=60, message="runs after take-over"
    )
    times = schedule_times(release)
    assert_every_run_once(times)
    print(f"{len(times)} scheduled runs so far, each once, none missing")
    wait_for(
        lambda: len(pods := release.operator_pods()) == 2 and all(ready(p) for p in pods),
        timeout=120,
        message="the Deployment back at two ready Pods",
    )


def test_helm_upgrade_rolls_the_pods_without_losing_a_run(release: Release) -> None:
    old = {p["metadata"]["name"] for p in release.operator_pods()}
    release.values["logLevel"] = "DEBUG"
    release.helm(
        "upgrade", RELEASE, str(CHART_DIR), "--namespace", RELEASE_NS, *set_args(release.values),
        "--wait", "--timeout", "5m", timeout=330,
    )  # fmt: skip
    pods = wait_for(
        lambda: len(p := release.operator_pods()) == 2 and all(ready(x) for x in p) and p,
        timeout=120,
        message="two ready Pods after the upgrade",
    )
    assert not old & {p["metadata"]["name"] for p in pods}, "every Pod was replaced"
    for pod in pods:
        assert "--log-level=DEBUG" in pod["spec"]["containers"][0]["args"]
    count = len(release.jobs(queue="ticks"))
    wait_for(
        lambda: len(release.jobs(queue="ticks")) >= count + 3, timeout=60, message="runs after the upgrade"
    )
    times = schedule_times(release)
    assert_every_run_once(times)
    print(f"after the upgrade: {len(times)} scheduled runs, each once, none missing")


def github_delivery(signing_key: str, event: str, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    return body, {
        "Content-Type": "application/json",
        "X-Hub-Signature-256": "sha256=" + hmac.new(signing_key.encode(), body, hashlib.sha256).hexdigest(),
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
    }


def test_the_release_example_runs_a_kubernetes_job_to_completion(release: Release, image: str) -> None:
    """examples/target-kubernetes-job-github-release.yaml as shipped, but with the locally built image
    (no registry here): a signed `release` delivery becomes one Job that the node runs to completion,
    reading the release from the mounted job file; the redelivery starts no second Job."""
    release.values["rbac.kubernetesJobs"] = True
    release.helm(
        "upgrade", RELEASE, str(CHART_DIR), "--namespace", RELEASE_NS, *set_args(release.values),
        "--wait", "--timeout", "5m", timeout=330,
    )  # fmt: skip
    secret, trigger = yaml.safe_load_all(RELEASE_EXAMPLE.read_text())
    signing_key = "release-" + uuid.uuid4().hex
    secret["stringData"]["secret"] = signing_key
    pod_spec = trigger["spec"]["target"]["kubernetesJob"]["jobTemplate"]["spec"]["template"]["spec"]
    pod_spec["containers"][0]["image"] = image
    pod_spec["containers"][0]["imagePullPolicy"] = "Never"
    release.apps.apply(secret)
    release.apps.apply(trigger)
    name = trigger["metadata"]["name"]
    path = wait_for(
        lambda: (release.apps.json("get", "jobtrigger", name).get("status") or {}).get("webhookPath"),
        timeout=60,
        message="webhook path",
    )
    url = release.service_url(WEBHOOK_SERVICE) + path
    body, headers = github_delivery(
        signing_key, "release", {"action": "published", "release": {"tag_name": "v1.2.3"}}
    )
    status, answer = wait_for(
        lambda: (r := release.http("POST", url, body, headers))[0] != 404 and r,
        timeout=60,
        message="not 404",
    )
    assert status == 202, answer

    def jobs() -> list[dict[str, Any]]:
        items = release.apps.json("get", "jobs.batch", "-l", "app.kubernetes.io/name=release-deploy")["items"]
        return list(items)

    done = wait_for(
        lambda: (j := jobs()) and j[0].get("status", {}).get("succeeded") == 1 and j,
        timeout=180,
        message=f"the release Job to succeed\n{describe(release)}",
    )
    assert len(done) == 1, done
    job_name = done[0]["metadata"]["name"]
    logs = release.apps("logs", f"job/{job_name}").stdout
    assert 'deploying "tag_name":"v1.2.3"' in logs, logs
    again, answer2 = wait_for(
        lambda: (r := release.http("POST", url, body, headers))[0] != 404 and r,
        timeout=60,
        message="redelivery not 404",
    )
    assert again == 202, answer2
    assert [j["metadata"]["name"] for j in jobs()] == [job_name], "the redelivery started no second Job"
    print(f"\nrelease Job {job_name} succeeded; the redelivery met it")


def test_helm_uninstall_keeps_the_crd_and_the_jobtriggers(release: Release) -> None:
    release.helm("uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait", timeout=180)
    release.kubectl("get", "crd", "jobtriggers.triggers.portico.dev")
    names = {t["metadata"]["name"] for t in release.apps.json("get", "jobtriggers")["items"]}
    assert names == {"ticks", "gh", "release-deploy"}
    assert release.system.json("get", "deployments")["items"] == []

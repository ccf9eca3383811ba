"""The chart's `workers` block: one Deployment (and PodDisruptionBudget) per worker from the user's
image, whose arguments `portico worker` accepts, with probes on the worker's own port, the queue
token as a file, and clear refusals of incomplete entries."""

from __future__ import annotations

from typing import Any

import pytest

from portico.cli import build_parser
from tests.conftest import Kubectl
from tests.helm.conftest import QUEUE_URL, Helm, Render, find, one

REPORTS = {
    "image": {"repository": "registry.example.com/acme/report-worker", "tag": "1.4.2"},
    "handlers": "acme.reports.jobs:handlers",
    "queues": ["urgent", "reports"],
    "concurrency": 8,
    "replicas": 2,
}
NAME = "portico-portico-triggers-worker-reports"


def worker_objects(render: Render, **values: Any) -> list[dict[str, Any]]:
    return [
        o for o in render(**values) if o["metadata"]["name"].startswith("portico-portico-triggers-worker")
    ]


def test_no_workers_by_default(render: Render) -> None:
    assert worker_objects(render) == []


def test_a_worker_deployment_runs_portico_worker_with_its_settings(render: Render) -> None:
    objects = worker_objects(
        render,
        workers={"reports": REPORTS, "mail": {**REPORTS, "handlers": "acme.mail:handlers", "replicas": 0}},
        **{"queueService.token.existingSecret": "queue-token"},
    )
    deployment = one(objects, "Deployment", NAME)
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"]["portico.dev/worker"] == "reports"
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] == 40
    [container] = pod["containers"]
    assert container["image"] == "registry.example.com/acme/report-worker:1.4.2"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]

    args = build_parser().parse_args(container["args"])
    assert args.command == "worker"
    assert (args.handlers, args.queues, args.concurrency) == (
        "acme.reports.jobs:handlers",
        ["urgent", "reports"],
        8,
    )
    assert args.queue_url == QUEUE_URL
    assert args.queue_token_file == "/var/run/portico/queue-token/token"
    assert args.shutdown_timeout == 25 < pod["terminationGracePeriodSeconds"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["queue-token"] == "/var/run/portico/queue-token"

    pdb = one(objects, "PodDisruptionBudget", NAME)
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": spec["selector"]}
    mail = one(objects, "Deployment", "portico-portico-triggers-worker-mail")
    assert mail["spec"]["replicas"] == 0, "replicas: 0 overrides the default"


def test_pdb_and_resources_follow_the_overrides(render: Render) -> None:
    objects = worker_objects(
        render,
        workers={
            "reports": {
                **REPORTS,
                "podDisruptionBudget": {"enabled": False},
                "resources": {"limits": {"cpu": "2"}},
            },
            "bulk": {**REPORTS, "podDisruptionBudget": {"minAvailable": 2}},
        },
    )
    assert find(objects, "PodDisruptionBudget", NAME) == []
    container = one(objects, "Deployment", NAME)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "512Mi"}
    bulk = one(objects, "PodDisruptionBudget", "portico-portico-triggers-worker-bulk")
    assert bulk["spec"]["minAvailable"] == 2 and "maxUnavailable" not in bulk["spec"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"handlers": "a.b:c"}, "workers.reports.image.repository is required"),
        ({"image": {"repository": "r"}}, "workers.reports.handlers is required"),
        (
            {**REPORTS, "shutdownTimeoutSeconds": 60},
            "terminationGracePeriodSeconds must be longer than shutdownTimeoutSeconds",
        ),
        ({**REPORTS, "concurrency": 0}, "concurrency"),
        ({**REPORTS, "handlers": "not an import path"}, "handlers"),
        ({**REPORTS, "unknownKey": 1}, "unknownKey"),
    ],
)
def test_incomplete_or_wrong_workers_are_refused(helm: Helm, entry: dict[str, Any], message: str) -> None:
    import json

    from tests.helm.conftest import CHART_DIR

    proc = helm(
        "template",
        "portico",
        str(CHART_DIR),
        "--set-json",
        f"queueService.url={json.dumps(QUEUE_URL)}",
        "--set-json",
        f"workers={json.dumps({'reports': entry})}",
        check=False,
    )
    assert proc.returncode != 0
    assert message in proc.stderr


def test_rendered_workers_are_accepted_by_the_api_server(
    render: Render, kubectl_admin: Kubectl, namespace: str
) -> None:
    for obj in worker_objects(render, namespace=namespace, workers={"reports": REPORTS}):
        kubectl_admin.in_namespace(namespace).apply(obj, "--dry-run=server")

"""`kubectl portico doctor`: checks an installation end to end and says, for each problem, what is wrong
and the command that fixes it. Each check is independent: one failing does not hide the others."""

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from portico import __version__
from portico.kubectl_plugin.cluster import CRD_NAME, Cluster, PluginError, arg_value, container_args
from portico.kubectl_plugin.output import document, human_duration
from portico.kubectl_plugin.queue import QueueEndpoint, find_queue, unreachable_hint
from portico.operator.resource import GROUP, PLURAL, VERSION

Verdict = Literal["ok", "warn", "fail"]
DEFAULT_LEASE_NAME = "portico-operator"
MARKS = {"ok": "[ok]  ", "warn": "[warn]", "fail": "[FAIL]"}

ACCESS_NEEDED: tuple[tuple[str, str, str, bool], ...] = (
    # (verb, group, resource, required by the everyday commands)
    ("list", GROUP, PLURAL, True),
    ("get", GROUP, PLURAL, True),
    ("patch", GROUP, PLURAL, True),
    ("list", "", "events", True),
    ("get", "", "secrets", False),
    ("list", "apps", "deployments", False),
    ("list", "", "pods", False),
    ("get", "coordination.k8s.io", "leases", False),
)


@dataclass
class Check:
    name: str
    verdict: Verdict
    summary: str
    details: list[str] = field(default_factory=list)
    fix: list[str] = field(default_factory=list)


@dataclass
class DoctorOptions:
    operator_namespace: str | None = None
    lease_name: str | None = None
    lease_namespace: str | None = None
    queue_url: str | None = None
    queue_token_file: str | None = None
    timeout: float = 5.0


class Doctor:
    def __init__(self, cluster: Cluster, options: DoctorOptions) -> None:
        self.cluster = cluster
        self.options = options
        self.deployments: list[Any] = []

    async def run(self) -> list[Check]:
        checks: list[Check] = []
        steps: list[tuple[str, Callable[[], Awaitable[Check]]]] = [
            ("CRD", self.crd),
            ("Operator", self.operator_pods),
            ("Leader", self.leader_lease),
            ("Queue service", self.queue_service),
            ("Access", self.access),
        ]
        for name, step in steps:
            try:
                checks.append(await step())
            except PluginError as exc:
                checks.append(Check(name, "fail", str(exc)))
            except ApiException as exc:
                checks.append(Check(name, "warn", f"API error {exc.status} {exc.reason}"))
        return checks

    async def crd(self) -> Check:
        api: Any = client.ApiextensionsV1Api(self.cluster.api)
        try:
            crd = await api.read_custom_resource_definition(CRD_NAME, _request_timeout=self.cluster.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return Check(
                    "CRD",
                    "fail",
                    f"{CRD_NAME} is not installed",
                    fix=[
                        "helm install the portico-triggers chart (it carries the CRD)",
                        "or: kubectl apply --server-side -f crds/jobtrigger.yaml",
                    ],
                )
            return Check("CRD", "warn", f"cannot read {CRD_NAME} ({exc.status} {exc.reason})")
        versions = {v.name: v for v in crd.spec.versions}
        established = any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])
        ours = versions.get(VERSION)
        if ours is None or not ours.served:
            return Check(
                "CRD",
                "fail",
                f"{CRD_NAME} does not serve {VERSION} (served: {', '.join(sorted(versions)) or 'none'})",
                fix=["upgrade the chart to the version of this plugin (" + __version__ + ")"],
            )
        if not established:
            return Check(
                "CRD",
                "fail",
                f"{CRD_NAME} is not Established yet",
                fix=["kubectl get crd " + CRD_NAME + " -o yaml  # see status.conditions"],
            )
        expected = _expected_crd()
        installed = self.cluster.api.sanitize_for_serialization(ours)
        drift = _schema_drift(expected, installed)
        if drift:
            return Check(
                "CRD",
                "warn",
                f"{CRD_NAME} {VERSION} is served, but its schema differs from this plugin's ({__version__})",
                details=drift[:5],
                fix=[
                    "helm upgrade the chart (or kubectl apply --server-side -f crds/jobtrigger.yaml) so "
                    "fields are not pruned; or use the plugin of the installed version"
                ],
            )
        return Check(
            "CRD", "ok", f"{CRD_NAME} {VERSION} established, schema matches this plugin ({__version__})"
        )

    async def operator_pods(self) -> Check:
        self.deployments = await self.cluster.operator_deployments(self.options.operator_namespace)
        if not self.deployments:
            where = (
                f"namespace {self.options.operator_namespace}"
                if self.options.operator_namespace
                else "any namespace"
            )
            return Check(
                "Operator",
                "fail",
                f"no operator Deployment in {where}",
                fix=[
                    "helm install portico ./helm/portico-triggers -n portico-system --create-namespace",
                    "or pass --operator-namespace where it runs",
                ],
            )
        details: list[str] = []
        fix: list[str] = []
        worst: Verdict = "ok"
        summaries = []
        for deployment in self.deployments:
            meta, spec, status = deployment.metadata, deployment.spec, deployment.status
            wanted, ready = spec.replicas or 0, (status.ready_replicas or 0) if status else 0
            summaries.append(f"{meta.namespace}/{meta.name} {ready}/{wanted} ready")
            if ready < wanted:
                worst = "fail" if ready == 0 else _worse(worst, "warn")
            selector = ",".join(f"{k}={v}" for k, v in (spec.selector.match_labels or {}).items())
            pods = await self.cluster.core.list_namespaced_pod(
                meta.namespace, label_selector=selector, _request_timeout=self.cluster.timeout
            )
            if not pods.items and wanted:
                details.append(f"{meta.namespace}/{meta.name}: no Pods exist")
                fix.append(
                    f"kubectl -n {meta.namespace} describe deployment {meta.name}"
                    "  # ReplicaSet events: quota, admission, image"
                )
                worst = "fail"
            for pod in pods.items:
                problem = _pod_problem(pod)
                if problem:
                    details.append(f"pod {pod.metadata.name}: {problem}")
                    fix.append(
                        f"kubectl -n {meta.namespace} logs pod/{pod.metadata.name} --previous"
                        "  # or describe pod"
                    )
                    worst = _worse(worst, "warn")
        return Check("Operator", worst, "; ".join(summaries), details, fix)

    async def leader_lease(self) -> Check:
        args = container_args(self.deployments[0]) if self.deployments else []
        if "--no-leader-election" in args:
            return Check("Leader", "ok", "leader election is off (one replica runs everything)")
        name = self.options.lease_name or arg_value(args, "--lease-name") or DEFAULT_LEASE_NAME
        namespace = (
            self.options.lease_namespace
            or arg_value(args, "--lease-namespace")
            or (self.deployments[0].metadata.namespace if self.deployments else None)
            or self.cluster.namespace
        )
        coordination: Any = client.CoordinationV1Api(self.cluster.api)
        try:
            lease = await coordination.read_namespaced_lease(
                name, namespace, _request_timeout=self.cluster.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return Check(
                    "Leader",
                    "fail",
                    f"no Lease {namespace}/{name}: no operator replica has ever led",
                    fix=["check the operator Pods above and their logs (lease errors are logged)"],
                )
            return Check(
                "Leader", "warn", f"cannot read Lease {namespace}/{name} ({exc.status} {exc.reason})"
            )
        spec = lease.spec
        holder = spec.holder_identity
        renewed = spec.renew_time
        if not holder or renewed is None:
            return Check(
                "Leader",
                "fail",
                f"Lease {namespace}/{name} is held by nobody",
                fix=["check that an operator replica is running with leader election"],
            )
        age = (datetime.now(UTC) - renewed).total_seconds()
        duration = spec.lease_duration_seconds or 15
        transitions = spec.lease_transitions or 0
        summary = (
            f"{holder} leads (Lease {namespace}/{name}, renewed {human_duration(age)} ago, "
            f"{transitions} transitions)"
        )
        if age > duration:
            return Check(
                "Leader",
                "fail",
                f"the Lease {namespace}/{name} expired {human_duration(age - duration)} ago "
                f"(last holder {holder})",
                fix=[
                    "the leader stopped renewing: check the operator Pods and their API-server connectivity"
                ],
            )
        return Check("Leader", "ok", summary)

    async def queue_service(self) -> Check:
        try:
            endpoint = await find_queue(
                self.cluster,
                self.options.queue_url,
                self.options.queue_token_file,
                self.options.operator_namespace,
            )
        except PluginError as exc:
            return Check("Queue service", "fail", str(exc))
        return await check_queue(endpoint, self.options.timeout)

    async def access(self) -> Check:
        authz: Any = client.AuthorizationV1Api(self.cluster.api)
        denied_required: list[str] = []
        denied_optional: list[str] = []
        for verb, group, resource, required in ACCESS_NEEDED:
            review = client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(
                        verb=verb, group=group, resource=resource, namespace=self.cluster.namespace
                    )
                )
            )
            try:
                result = await authz.create_self_subject_access_review(
                    review, _request_timeout=self.cluster.timeout
                )
            except ApiException as exc:
                return Check("Access", "warn", f"cannot ask the API server ({exc.status} {exc.reason})")
            if not result.status.allowed:
                text = f"{verb} {resource}{'.' + group if group else ''}"
                (denied_required if required else denied_optional).append(text)
        ns = self.cluster.namespace
        if denied_required:
            return Check(
                "Access",
                "fail",
                f"you cannot {', '.join(denied_required)} in namespace {ns}",
                details=[f"also denied (some commands): {', '.join(denied_optional)}"]
                if denied_optional
                else [],
                fix=[
                    f"kubectl -n {ns} create rolebinding portico-editor "
                    "--clusterrole=<release>-portico-triggers-jobtrigger-editor --user=<you>"
                ],
            )
        if denied_optional:
            return Check(
                "Access",
                "warn",
                f"everyday commands allowed in {ns}; denied: {', '.join(denied_optional)}",
                details=[
                    "describe --show-secret needs get secrets; "
                    "doctor needs list deployments/pods and get leases"
                ],
            )
        return Check(
            "Access", "ok", f"you may get, list and patch jobtriggers and read what doctor needs in {ns}"
        )


async def check_queue(endpoint: QueueEndpoint, request_seconds: float) -> Check:
    headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=request_seconds)) as session:
            async with session.get(endpoint.url + "/healthz") as response:
                if response.status != 200:
                    return Check(
                        "Queue service",
                        "fail",
                        f"{endpoint.url}/healthz answered {response.status}",
                        fix=["the store is failing or overloaded: check the queue service's logs and disk"],
                    )
            async with session.get(endpoint.url + "/v1/jobs?limit=1", headers=headers) as response:
                if response.status == 401:
                    return Check(
                        "Queue service",
                        "warn",
                        f"{endpoint.url} is up but wants a token for /v1/jobs",
                        fix=["pass --queue-token-file (or PORTICO_QUEUE_TOKEN) for history"],
                    )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check(
            "Queue service",
            "fail",
            f"cannot reach {endpoint.url}: {exc or type(exc).__name__}",
            fix=[unreachable_hint(endpoint)],
        )
    return Check("Queue service", "ok", f"{endpoint.url} (from {endpoint.origin}) is healthy")


def _worse(a: Verdict, b: Verdict) -> Verdict:
    order = ("ok", "warn", "fail")
    return a if order.index(a) >= order.index(b) else b


def _pod_problem(pod: Any) -> str:
    status = pod.status
    if status is None or (status.phase == "Pending" and not status.container_statuses):
        unscheduled = (
            [c for c in (status.conditions or []) if c.type == "PodScheduled" and c.status != "True"]
            if status
            else []
        )
        why = f": {unscheduled[0].reason} {unscheduled[0].message or ''}".rstrip() if unscheduled else ""
        return "Pending, not scheduled" + why
    for c in status.container_statuses or []:
        waiting = c.state.waiting if c.state else None
        if waiting is not None:
            return f"{c.name} {waiting.reason} (restarts {c.restart_count}): {waiting.message or ''}".rstrip(
                ": "
            )
        if not c.ready:
            return f"{c.name} not ready (restarts {c.restart_count})"
        if c.restart_count and c.restart_count >= 3:
            return f"{c.name} restarted {c.restart_count} times"
    return ""


def _expected_crd() -> dict[str, Any]:
    from portico.operator.crd import build_crd
    from portico.sources.catalog import SOURCE_CLASSES

    version: dict[str, Any] = build_crd(SOURCE_CLASSES)["spec"]["versions"][0]
    return version


def _schema_drift(expected: Any, installed: Any, path: str = "") -> list[str]:
    """Paths where the installed CRD version lacks or changes what this plugin's models generate."""
    if isinstance(expected, dict):
        if not isinstance(installed, dict):
            return [path or "/"]
        out: list[str] = []
        for key, value in expected.items():
            if key == "description":
                continue
            if key not in installed:
                out.append(f"{path}.{key} missing")
            else:
                out += _schema_drift(value, installed[key], f"{path}.{key}")
        return out
    if isinstance(expected, list):
        if not isinstance(installed, list) or len(installed) != len(expected):
            return [f"{path} differs"]
        return [d for e, i in zip(expected, installed, strict=True) for d in _schema_drift(e, i, path + "[]")]
    return [] if expected == installed else [f"{path} differs"]


def print_checks(checks: list[Check], output: str | None, out: TextIO) -> int:
    if output in ("json", "yaml"):
        document(out, {"checks": [asdict(c) for c in checks]}, output)
    else:
        for check in checks:
            out.write(f"{MARKS[check.verdict]} {check.name}: {check.summary}\n")
            for line in check.details:
                out.write(f"         {line}\n")
            for line in check.fix:
                out.write(f"         fix: {line}\n")
    return 1 if any(c.verdict == "fail" for c in checks) else 0

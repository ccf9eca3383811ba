"""`helm lint` and `helm template` of the chart, with assertions on the rendered objects: the pod's
security, the probes and shutdown timing, and least-privilege RBAC in both modes."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.helm.conftest import CHART_DIR, QUEUE_URL, Helm, Render, find, one, set_args

RELEASE_NS = "portico-system"
OPERATOR = "portico-portico-triggers-operator"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}
EXPECTED_OPERATOR_RULES = {
    ("triggers.portico.dev", "jobtriggers"): {"get", "list", "watch", "patch"},
    ("triggers.portico.dev", "jobtriggers/status"): {"patch"},
    ("", "events"): {"create", "patch"},
    ("", "secrets"): {"get", "list", "watch"},
}


def rules_by_resource(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule.get("verbs", []), rule
        assert "*" not in rule.get("resources", []), rule
        assert "*" not in rule.get("apiGroups", []), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment", OPERATOR)
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    container: dict[str, Any] = containers[0]
    return container


def arg_value(args: list[str], flag: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{flag}=")]
    assert len(values) == 1, (flag, args)
    return values[0]


def test_lint_default_and_namespaced(helm: Helm) -> None:
    helm("lint", "--strict", str(CHART_DIR), *set_args({"queueService.url": QUEUE_URL}))
    helm(
        "lint",
        "--strict",
        str(CHART_DIR),
        *set_args(
            {
                "watchNamespaces": ["payments", "reports"],
                "queueService.enabled": True,
                "queueService.token.create": True,
                "networkPolicy.enabled": True,
                "webhook.ingress.enabled": True,
                "metrics.serviceMonitor.enabled": True,
            }
        ),
    )


def test_default_pod_is_locked_down(render: Render) -> None:
    objects = render()
    pod = one(objects, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container(objects)
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert "privileged" not in security or security["privileged"] is False
    # A read-only root file system still needs a writable /tmp.
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_default_probes_ports_and_shutdown(render: Render) -> None:
    objects = render()
    container = operator_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"webhook": 8080, "health": 8081, "metrics": 9090}
    args = container["args"]
    assert args[0] == "operator"
    assert not [a for a in args if a.startswith("--namespace")]
    assert arg_value(args, "--webhook-port") == "8080"
    assert arg_value(args, "--health-port") == "8081"
    assert arg_value(args, "--metrics-port") == "9090"
    for probe in (container["livenessProbe"], container["readinessProbe"]):
        assert probe["httpGet"] == {"path": "/healthz", "port": "health"}
    stop_timeout = float(arg_value(args, "--stop-timeout"))
    pod = one(objects, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > stop_timeout
    env = {e["name"]: e for e in container["env"]}
    assert env["PORTICO_QUEUE_URL"]["value"] == QUEUE_URL
    assert env["PORTICO_LOG_FORMAT"]["value"] == "json"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert pod["serviceAccountName"] == OPERATOR


def test_services_keep_webhooks_apart_from_metrics(render: Render) -> None:
    objects = render()
    webhook = one(objects, "Service", f"{OPERATOR}-webhook")
    assert [p["targetPort"] for p in webhook["spec"]["ports"]] == ["webhook"]
    metrics = one(objects, "Service", f"{OPERATOR}-metrics")
    assert metrics["spec"]["type"] == "ClusterIP"
    assert [p["targetPort"] for p in metrics["spec"]["ports"]] == ["metrics"]
    selector = one(objects, "Deployment", OPERATOR)["spec"]["selector"]["matchLabels"]
    assert webhook["spec"]["selector"] == metrics["spec"]["selector"] == selector
    pdb = one(objects, "PodDisruptionBudget", OPERATOR)
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    assert (
        not find(objects, "Ingress")
        and not find(objects, "NetworkPolicy")
        and not find(objects, "ServiceMonitor")
    )


def test_cluster_wide_rbac_is_least_privilege(render: Render) -> None:
    objects = render()
    role = one(objects, "ClusterRole", OPERATOR)
    rules = rules_by_resource(role)
    crds = rules.pop(("apiextensions.k8s.io", "customresourcedefinitions"))
    assert crds == {"list", "watch"}
    assert rules == EXPECTED_OPERATOR_RULES
    binding = one(objects, "ClusterRoleBinding", OPERATOR)
    assert binding["roleRef"]["name"] == OPERATOR
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": OPERATOR, "namespace": RELEASE_NS}]
    assert one(objects, "ServiceAccount", OPERATOR)["metadata"]["namespace"] == RELEASE_NS
    lease_role = one(objects, "Role", f"{OPERATOR}-leader-election")
    assert lease_role["metadata"]["namespace"] == RELEASE_NS
    assert rules_by_resource(lease_role) == {("coordination.k8s.io", "leases"): {"get", "create", "update"}}
    named = [r for r in lease_role["rules"] if set(r["verbs"]) & {"get", "update"}]
    assert all(r.get("resourceNames") == [OPERATOR] for r in named), "renewal is limited to our own Lease"
    args = operator_container(objects)["args"]
    assert arg_value(args, "--lease-name") == OPERATOR
    assert arg_value(args, "--lease-namespace") == RELEASE_NS
    operator_roles = [r for r in find(objects, "Role") if r["metadata"]["name"] == OPERATOR]
    assert not operator_roles


@pytest.mark.parametrize("namespaces", [[], ["payments", "reports"]])
def test_jobs_are_granted_only_for_the_kubernetes_job_target(render: Render, namespaces: list[str]) -> None:
    for objects in (
        render(watchNamespaces=namespaces),
        render(watchNamespaces=namespaces, **{"rbac.kubernetesJobs": False}),
    ):
        for role in [*find(objects, "ClusterRole"), *find(objects, "Role")]:
            assert ("batch", "jobs") not in rules_by_resource(role)
    objects = render(watchNamespaces=namespaces, **{"rbac.kubernetesJobs": True})
    roles = [*find(objects, "Role", OPERATOR)] if namespaces else [one(objects, "ClusterRole", OPERATOR)]
    assert len(roles) == max(1, len(namespaces))
    for role in roles:
        rules = rules_by_resource(role)
        assert rules.pop(("batch", "jobs")) == {"create", "get", "list", "delete"}
        rules.pop(("apiextensions.k8s.io", "customresourcedefinitions"), None)
        assert rules == EXPECTED_OPERATOR_RULES


def test_namespaced_rbac_has_no_cluster_wide_secret_access(render: Render) -> None:
    namespaces = ["payments", "reports"]
    objects = render(watchNamespaces=namespaces)
    args = operator_container(objects)["args"]
    assert [a for a in args if a.startswith("--namespace")] == [f"--namespace={n}" for n in namespaces]

    for cluster_role in find(objects, "ClusterRole"):
        rules = rules_by_resource(cluster_role)
        for (_group, resource), verbs in rules.items():
            assert resource != "secrets", cluster_role["metadata"]["name"]
            if cluster_role["metadata"]["name"] == OPERATOR:
                assert not verbs & WRITE_VERBS, (resource, verbs)
                assert resource in {"customresourcedefinitions", "namespaces"}, resource

    roles = {r["metadata"]["namespace"]: r for r in find(objects, "Role", OPERATOR)}
    assert sorted(roles) == namespaces
    for role in roles.values():
        assert rules_by_resource(role) == EXPECTED_OPERATOR_RULES
    bindings = {b["metadata"]["namespace"]: b for b in find(objects, "RoleBinding", OPERATOR)}
    assert sorted(bindings) == namespaces
    for binding in bindings.values():
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": OPERATOR,
        }
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": OPERATOR, "namespace": RELEASE_NS}]


def test_namespaced_without_cluster_observation_creates_no_operator_cluster_role(render: Render) -> None:
    objects = render(**{"watchNamespaces": ["payments"], "rbac.observeCluster": False})
    assert not find(objects, "ClusterRole", OPERATOR)
    assert not find(objects, "ClusterRoleBinding", OPERATOR)
    assert find(objects, "Role", OPERATOR)


def test_leader_election_off_drops_the_lease_role(render: Render) -> None:
    objects = render(**{"leaderElection.enabled": False})
    assert not find(objects, "Role", f"{OPERATOR}-leader-election")
    assert "--no-leader-election" in operator_container(objects)["args"]
    assert "--leader-election" in operator_container(render())["args"]


def test_more_than_one_replica_shards_the_triggers_on_named_leases(render: Render) -> None:
    objects = render(**{"replicaCount": 3})
    args = operator_container(objects)["args"]
    assert arg_value(args, "--shards") == "32"
    assert "--leader-election" in args
    lease_role = one(objects, "Role", f"{OPERATOR}-leader-election")
    assert rules_by_resource(lease_role) == {
        ("coordination.k8s.io", "leases"): {"get", "create", "update", "list"}
    }
    named = [r for r in lease_role["rules"] if set(r["verbs"]) & {"get", "update"}]
    names = {n for r in named for n in r["resourceNames"]}
    assert names == {
        OPERATOR,
        *(f"{OPERATOR}-shard-{i}" for i in range(32)),
        *(f"{OPERATOR}-member-{i}" for i in range(32)),
    }, "every Lease a replica writes is named"
    pdb = one(objects, "PodDisruptionBudget", OPERATOR)
    assert pdb["spec"]["maxUnavailable"] == 1, "a drain takes one replica (and its shards) at a time"

    few = render(**{"replicaCount": 2, "sharding.shards": 4})
    assert arg_value(operator_container(few)["args"], "--shards") == "4"
    for single in (render(), render(**{"replicaCount": 2, "sharding.enabled": False})):
        args = operator_container(single)["args"]
        assert not [a for a in args if a.startswith("--shards")], "one leader, exactly as before"
        role = one(single, "Role", f"{OPERATOR}-leader-election")
        assert "list" not in rules_by_resource(role)[("coordination.k8s.io", "leases")]


def test_user_roles_aggregate_into_the_default_roles(render: Render) -> None:
    objects = render()
    editor = one(objects, "ClusterRole", "portico-portico-triggers-jobtrigger-editor")
    assert editor["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert rules_by_resource(editor)[("triggers.portico.dev", "jobtriggers")] >= {"create", "delete", "patch"}
    viewer = one(objects, "ClusterRole", "portico-portico-triggers-jobtrigger-viewer")
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert not set().union(*rules_by_resource(viewer).values()) & WRITE_VERBS
    assert not find(
        render(**{"rbac.aggregateToDefaultRoles": False}),
        "ClusterRole",
        "portico-portico-triggers-jobtrigger-viewer",
    )


def test_crd_is_kept_on_uninstall_unless_told_otherwise(render: Render) -> None:
    crd = one(render(), "CustomResourceDefinition", "jobtriggers.triggers.portico.dev")
    assert crd["metadata"]["annotations"] == {
        "helm.sh/resource-policy": "keep",
        "argocd.argoproj.io/sync-options": "Delete=false",
    }
    crd = one(render(**{"crds.keep": False}), "CustomResourceDefinition")
    assert not crd["metadata"].get("annotations")
    assert not find(render(**{"crds.enabled": False}), "CustomResourceDefinition")


def test_extension_points_reach_the_pod(render: Render) -> None:
    objects = render(
        **{
            "extraVolumes": [{"name": "incoming", "persistentVolumeClaim": {"claimName": "files"}}],
            "extraVolumeMounts": [{"name": "incoming", "mountPath": "/data/incoming", "readOnly": True}],
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
            "extraArgs": ["--status-interval", "2"],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "platform", "effect": "NoSchedule"}
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                                ]
                            }
                        ]
                    }
                }
            },
            "imagePullSecrets": [{"name": "registry"}],
            "image.digest": "sha256:" + "a" * 64,
            "replicaCount": 2,
            "podAntiAffinityPreset": "hard",
        }
    )
    deployment = one(objects, "Deployment", OPERATOR)
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(objects)
    assert deployment["spec"]["replicas"] == 2
    assert {"name": "incoming", "persistentVolumeClaim": {"claimName": "files"}} in pod["volumes"]
    assert {"name": "incoming", "mountPath": "/data/incoming", "readOnly": True} in container["volumeMounts"]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in container["env"]
    assert container["args"][-2:] == ["--status-interval", "2"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["affinity"] and "podAntiAffinity" not in pod["affinity"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert container["image"] == "portico/portico-triggers@sha256:" + "a" * 64


def test_anti_affinity_presets(render: Render) -> None:
    soft = one(render(), "Deployment", OPERATOR)["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in soft
    hard = one(render(podAntiAffinityPreset="hard"), "Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in hard["affinity"]["podAntiAffinity"]
    none = one(render(podAntiAffinityPreset="none"), "Deployment", OPERATOR)["spec"]["template"]["spec"]
    assert "affinity" not in none


def test_reference_queue_service_with_token(render: Render) -> None:
    objects = render(**{"queueService.enabled": True, "queueService.token.create": True})
    queue = one(objects, "Deployment", "portico-portico-triggers-queue")
    pod = queue["spec"]["template"]["spec"]
    assert queue["spec"]["replicas"] == 1 and queue["spec"]["strategy"] == {"type": "Recreate"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    args = pod["containers"][0]["args"]
    assert args[0] == "queue-service"
    assert arg_value(args, "--db") == "/var/lib/portico/queue.db"
    assert arg_value(args, "--token-file") == "/var/run/portico/queue-token/token"
    claim = one(objects, "PersistentVolumeClaim", "portico-portico-triggers-queue")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "portico-portico-triggers-queue"}} in pod[
        "volumes"
    ]
    secret = one(objects, "Secret", "portico-portico-triggers-queue-token")
    assert len(secret["data"]["token"]) >= 48

    container = operator_container(objects)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PORTICO_QUEUE_URL"] == f"http://portico-portico-triggers-queue.{RELEASE_NS}.svc:8000"
    assert arg_value(container["args"], "--queue-token-file") == "/var/run/portico/queue-token/token"
    assert one(objects, "Service", "portico-portico-triggers-queue")["spec"]["ports"][0]["port"] == 8000


def test_existing_token_secret_is_referenced_not_created(render: Render) -> None:
    objects = render(
        **{"queueService.token.existingSecret": "queue-token", "queueService.token.key": "bearer"}
    )
    assert not find(objects, "Secret")
    pod = one(objects, "Deployment", OPERATOR)["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "queue-token")
    assert volume["secret"] == {"secretName": "queue-token", "items": [{"key": "bearer", "path": "bearer"}]}
    assert (
        arg_value(operator_container(objects)["args"], "--queue-token-file")
        == "/var/run/portico/queue-token/bearer"
    )


def test_ingress_network_policy_and_service_monitor(render: Render) -> None:
    objects = render(
        **{
            "webhook.ingress.enabled": True,
            "webhook.ingress.className": "nginx",
            "webhook.ingress.hosts": [{"host": "hooks.example.com", "paths": [{"path": "/hooks"}]}],
            "webhook.ingress.tls": [{"secretName": "hooks-tls", "hosts": ["hooks.example.com"]}],
            "networkPolicy.enabled": True,
            "networkPolicy.metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}],
            "metrics.serviceMonitor.enabled": True,
        }
    )
    ingress = one(objects, "Ingress", f"{OPERATOR}-webhook")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "hooks-tls", "hosts": ["hooks.example.com"]}]
    path = ingress["spec"]["rules"][0]["http"]["paths"][0]
    assert path["path"] == "/hooks" and path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": f"{OPERATOR}-webhook", "port": {"name": "http-webhook"}}

    policy = one(objects, "NetworkPolicy", OPERATOR)
    webhook_rule, internal_rule = policy["spec"]["ingress"]
    assert webhook_rule["ports"] == [{"port": "webhook", "protocol": "TCP"}] and "from" not in webhook_rule
    assert {p["port"] for p in internal_rule["ports"]} == {"health", "metrics"}
    assert internal_rule["from"][0] == {"podSelector": {}}
    assert internal_rule["from"][1]["namespaceSelector"]["matchLabels"] == {"name": "monitoring"}

    monitor = one(objects, "ServiceMonitor", OPERATOR)
    assert monitor["spec"]["endpoints"][0]["port"] == "http-metrics"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "two"}, "replicaCount"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"watchNamespaces": "payments"}, "watchNamespaces"),
        ({"ports.webhook": 70000}, "webhook"),
        ({"no.such.key": True}, "no"),
        ({"crds.enabled": "yes"}, "enabled"),
        ({"queueService.url": "queue:8000"}, "url"),
    ],
)
def test_schema_rejects_wrong_values(helm: Helm, values: dict[str, Any], message: str) -> None:
    proc = helm(
        "template",
        "portico",
        str(CHART_DIR),
        *set_args({"queueService.url": QUEUE_URL, **values}),
        check=False,
    )
    assert proc.returncode != 0
    assert "schema" in proc.stderr and message in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"stopTimeoutSeconds": 30, "terminationGracePeriodSeconds": 30},
            "must be longer than stopTimeoutSeconds",
        ),
        ({"replicaCount": 2, "leaderElection.enabled": False}, "needs leaderElection.enabled"),
        ({"leaderElection.renewDeadlineSeconds": 20}, "retryPeriodSeconds < renewDeadlineSeconds"),
        ({"queueService.url": ""}, "queueService.url is required"),
        ({"serviceAccount.create": False}, "serviceAccount.name is required"),
    ],
)
def test_inconsistent_values_fail_with_a_reason(helm: Helm, values: dict[str, Any], message: str) -> None:
    proc = helm(
        "template",
        "portico",
        str(CHART_DIR),
        *set_args({"queueService.url": QUEUE_URL, **values}),
        check=False,
    )
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_every_object_carries_the_chart_labels(render: Render) -> None:
    objects = render(**{"queueService.enabled": True, "watchNamespaces": ["a"]})
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "portico", obj["metadata"]["name"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/name"] == "portico-triggers"
        namespaced = obj["kind"] not in {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
        assert ("namespace" in obj["metadata"]) == namespaced, obj["metadata"]["name"]


def test_notes_give_a_first_trigger_that_validates(helm: Helm) -> None:
    from portico.operator.validate import validate_document

    values = set_args({"queueService.url": QUEUE_URL, "watchNamespaces": ["payments"]})
    out = helm("install", "portico", str(CHART_DIR), "-n", RELEASE_NS, "--dry-run=client", *values).stdout
    notes = out.split("NOTES:", 1)[1]
    assert "kubectl apply -n payments -f - <<'YAML'\n" in notes
    manifest = notes.split("<<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0]
    doc = yaml.safe_load(manifest)
    assert doc["kind"] == "JobTrigger"
    assert validate_document(doc) == []
    assert "kubectl get jt -n payments" in notes

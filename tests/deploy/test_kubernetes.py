"""deploy/k8s: every overlay and component builds with kubectl kustomize, validates against the
Kubernetes schemas, sets only known settings and every required one, and is locked down."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from candor_kit import catalogue, ports
from candor_kit.bus import DRAIN_TIMEOUT_S
from tests.deploy.manifests import (
    CANDOR_SERVICES,
    TARGETS,
    container_environment,
    kubectl,
    named,
    of_kind,
    render,
)

#: The Kubernetes release the schemas are checked against (kubectl's own minor version).
KUBERNETES_VERSION = "1.37.0"
#: Resources of CRDs with no bundled schema, and the spec fields each must have.
CUSTOM_RESOURCES = {
    ("cert-manager.io/v1", "Issuer"): ("ca",),
    ("cert-manager.io/v1", "Certificate"): ("secretName", "issuerRef", "dnsNames"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("selector", "endpoints"),
    ("monitoring.coreos.com/v1", "PrometheusRule"): ("groups",),
    ("keda.sh/v1alpha1", "ScaledObject"): ("scaleTargetRef", "triggers"),
}
WORKLOADS = ("Deployment", "StatefulSet")
#: How long a pod behind a Service waits before it stops: endpoint removal reaches every node's
#: kube-proxy and the ingress within a few seconds.
PRESTOP_S = 5


def test_kubectl_has_a_kustomize_that_knows_components() -> None:
    version = subprocess.run([kubectl(), "version", "--client"], capture_output=True, text=True).stdout
    found = re.search(r"Kustomize Version: v(\d+)", version)
    assert found and int(found.group(1)) >= 5, version


@pytest.mark.parametrize("target", TARGETS)
def test_every_manifest_validates_against_the_kubernetes_schemas(target: str) -> None:
    docs = render(target)
    assert of_kind(docs, "Deployment"), f"{target} renders no Deployment"
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if key in CUSTOM_RESOURCES:
            missing = [field for field in CUSTOM_RESOURCES[key] if field not in doc["spec"]]
            assert not missing, f"{target}: {doc['kind']} {doc['metadata']['name']} lacks {missing}"
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_each_service_gets_only_known_settings_and_every_required_one(target: str) -> None:
    docs = render(target)
    problems = []
    for service in CANDOR_SERVICES:
        environment = container_environment(docs, named(docs, "Deployment", f"candor-{service}"))
        problems += catalogue.check_environment(service, environment)
    assert problems == []


@pytest.mark.parametrize("target", TARGETS)
def test_the_review_desk_gets_only_its_settings_and_serves_where_its_probes_and_service_look(target: str) -> None:
    docs = render(target)
    deployment = named(docs, "Deployment", "candor-review")
    environment = container_environment(docs, deployment)
    assert catalogue.check_environment("review", environment) == []
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert environment["CANDOR_REVIEW_ADDRESS"] == f"0.0.0.0:{ports.REVIEW_PORT}"
    assert environment["CANDOR_REVIEW_GATEWAY"] == f"candor-gateway:{ports.GRPC_PORT}"
    assert environment["CANDOR_METRICS_ADDRESS"] == f"0.0.0.0:{ports.METRICS_PORT}"
    assert {port["name"]: port["containerPort"] for port in container["ports"]} == {
        "http": ports.REVIEW_PORT,
        "metrics": ports.METRICS_PORT,
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
        assert container[probe]["httpGet"].get("scheme", "HTTP") == (
            "HTTPS" if "CANDOR_REVIEW_TLS_CERT" in environment else "HTTP"
        )
    assert {port["port"] for port in named(docs, "Service", "candor-review")["spec"]["ports"]} == {
        ports.REVIEW_PORT,
        ports.METRICS_PORT,
    }


def test_prod_serves_the_review_desk_over_tls_and_checks_the_gateways_certificate() -> None:
    docs = render("overlays/prod")
    environment = container_environment(docs, named(docs, "Deployment", "candor-review"))
    assert environment["CANDOR_REVIEW_PLAINTEXT"] == environment["CANDOR_REVIEW_GATEWAY_PLAINTEXT"] == "loopback"
    assert environment["CANDOR_REVIEW_TLS_CERT"] and environment["CANDOR_REVIEW_GATEWAY_CA"]
    assert "candor-review" in named(docs, "Certificate", "candor-grpc-tls")["spec"]["dnsNames"]


def test_the_settings_check_fails_on_an_unknown_or_a_missing_setting() -> None:
    docs = render("overlays/prod")
    environment = container_environment(docs, named(docs, "Deployment", "candor-gateway"))
    typo = {**environment, "CANDOR_GATEWAY_MAX_CANDIDATE": "20"}
    assert catalogue.check_environment("gateway", typo) == [
        "gateway: CANDOR_GATEWAY_MAX_CANDIDATE is not a setting gateway reads"
    ]
    missing = {name: value for name, value in environment.items() if name != "CANDOR_GATEWAY_POLICY_FILE"}
    assert catalogue.check_environment("gateway", missing) == ["gateway: CANDOR_GATEWAY_POLICY_FILE is required"]
    edge = {
        **container_environment(docs, named(docs, "Deployment", "candor-matcher")),
        "CANDOR_MATCHER_BACKEND": "edge",
    }
    assert "matcher: CANDOR_MATCHER_DATA_DIR is required when CANDOR_MATCHER_BACKEND=edge" in (
        catalogue.check_environment("matcher", edge)
    )


@pytest.mark.parametrize("target", TARGETS)
def test_every_workload_has_probes_limits_and_a_locked_down_security_context(target: str) -> None:
    for workload in of_kind(render(target), *WORKLOADS):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"]:
            where = f"{name}/{container['name']}"
            assert "readinessProbe" in container and "livenessProbe" in container, where
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["limits"]) and {"cpu", "memory"} <= set(resources["requests"])
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where


@pytest.mark.parametrize("target", TARGETS)
def test_ports_and_addresses_agree_with_the_code(target: str) -> None:
    docs = render(target)
    for service in CANDOR_SERVICES:
        deployment = named(docs, "Deployment", f"candor-{service}")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        exposed = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert exposed == {
            "grpc": ports.GRPC_PORT,
            "health": ports.HEALTH_PORT,
            "metrics": ports.METRICS_PORT,
        }
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == ports.HEALTH_PORT
        environment = container_environment(docs, deployment)
        assert environment["CANDOR_GRPC_ADDRESS"].endswith(f":{ports.GRPC_PORT}")
        assert environment["CANDOR_HEALTH_ADDRESS"].endswith(f":{ports.HEALTH_PORT}")
        assert environment["CANDOR_METRICS_ADDRESS"].endswith(f":{ports.METRICS_PORT}")
        assert re.fullmatch(rf"(nats|tls)://candor-nats:{ports.NATS_CLIENT_PORT}", environment["CANDOR_NATS_URL"])
        assert environment["CANDOR_NATS_USER"] == service
        service_doc = named(docs, "Service", f"candor-{service}")
        service_ports = {port["name"]: port["port"] for port in service_doc["spec"]["ports"]}
        assert service_ports == {"grpc": ports.GRPC_PORT, "metrics": ports.METRICS_PORT}
    matcher = container_environment(docs, named(docs, "Deployment", "candor-matcher"))
    assert matcher["CANDOR_QDRANT_URL"].endswith(f"candor-qdrant:{ports.QDRANT_HTTP_PORT}")
    nats_ports = {
        port["name"]: port["port"] for port in named(docs, "Service", "candor-nats-headless")["spec"]["ports"]
    }
    assert nats_ports == {
        "client": ports.NATS_CLIENT_PORT,
        "cluster": ports.NATS_CLUSTER_PORT,
        "monitor": ports.NATS_MONITOR_PORT,
    }


def test_every_service_mounts_its_own_nats_password_only() -> None:
    docs = render("overlays/prod")
    for service in CANDOR_SERVICES:
        pod = named(docs, "Deployment", f"candor-{service}")["spec"]["template"]["spec"]
        secrets = {volume["secret"]["secretName"] for volume in pod["volumes"] if "secret" in volume}
        assert f"candor-nats-{service}" in secrets
        assert not {name for name in secrets if name.startswith("candor-nats-")} - {f"candor-nats-{service}"}


@pytest.mark.parametrize("target", TARGETS)
def test_the_audit_signing_key_comes_from_its_secret(target: str) -> None:
    docs = render(target)
    audit = named(docs, "Deployment", "candor-audit")
    pod = audit["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in pod["containers"][0]["volumeMounts"]}
    key_file = container_environment(docs, audit)["CANDOR_AUDIT_SIGNING_KEY_FILE"]
    volume = volumes[mounts[str(Path(key_file).parent)]]
    assert volume["secret"]["secretName"] == "candor-audit-signing-key"


def test_prod_runs_everything_over_tls() -> None:
    docs = render("overlays/prod")
    for service in CANDOR_SERVICES:
        environment = container_environment(docs, named(docs, "Deployment", f"candor-{service}"))
        assert environment["CANDOR_NATS_URL"].startswith("tls://")
        assert environment["CANDOR_GRPC_PLAINTEXT"] == "loopback" and environment["CANDOR_NATS_PLAINTEXT"] == "loopback"
        assert environment["CANDOR_GRPC_TLS_CERT"] and environment["CANDOR_GRPC_TLS_KEY"]
    matcher = container_environment(docs, named(docs, "Deployment", "candor-matcher"))
    assert matcher["CANDOR_QDRANT_URL"].startswith("https://")
    nats_conf = named(docs, "ConfigMap", "candor-nats-config")["data"]["nats.conf"]
    assert "verify: true" in nats_conf and "tls {" in nats_conf
    assert {doc["metadata"]["name"] for doc in of_kind(docs, "PodDisruptionBudget")} >= {
        f"candor-{name}" for name in (*CANDOR_SERVICES[:4], "nats", "qdrant")
    }


def test_prod_keeps_replicas_of_one_service_on_different_nodes() -> None:
    for workload in of_kind(render("overlays/prod"), *WORKLOADS):
        anti = workload["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution") or [
            term["podAffinityTerm"] for term in anti["preferredDuringSchedulingIgnoredDuringExecution"]
        ]
        own = workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        assert any(
            term["topologyKey"] == "kubernetes.io/hostname"
            and (
                term["labelSelector"]["matchLabels"].get("app.kubernetes.io/name") == own
                or "app.kubernetes.io/name" in term.get("matchLabelKeys", [])
            )
            for term in terms
        ), workload["metadata"]["name"]


def test_nats_and_qdrant_run_as_three_node_clusters_with_replicated_streams() -> None:
    docs = render("overlays/prod")
    for name in ("candor-nats", "candor-qdrant"):
        stateful = named(docs, "StatefulSet", name)
        assert stateful["spec"]["replicas"] == 3
        assert stateful["spec"]["volumeClaimTemplates"], name
    nats_conf = named(docs, "ConfigMap", "candor-nats-config")["data"]["nats.conf"]
    assert len(re.findall(r"candor-nats-\d\.candor-nats-headless:6222", nats_conf)) == 3
    for service in ("gateway", "audit"):
        environment = container_environment(docs, named(docs, "Deployment", f"candor-{service}"))
        assert environment["CANDOR_AUDIT_STREAM_REPLICAS"] == "3"


def test_dev_runs_one_replica_of_everything() -> None:
    for workload in of_kind(render("overlays/dev"), *WORKLOADS):
        assert workload["spec"]["replicas"] == 1, workload["metadata"]["name"]


def _pods_of(selector: dict[str, Any], pods: dict[str, dict[str, str]]) -> set[str]:
    """The pods a label selector picks: all its matchLabels, and each matchExpression."""
    labels = selector.get("matchLabels", {})
    tests = {
        "In": lambda value, values: value in values,
        "NotIn": lambda value, values: value is not None and value not in values,
        "Exists": lambda value, _: value is not None,
        "DoesNotExist": lambda value, _: value is None,
    }

    def picks(pod_labels: dict[str, str]) -> bool:
        return labels.items() <= pod_labels.items() and all(
            tests[expression["operator"]](pod_labels.get(expression["key"]), expression.get("values", []))
            for expression in selector.get("matchExpressions", [])
        )

    return {name for name, pod_labels in pods.items() if picks(pod_labels)}


def _peer(peer: dict[str, Any], pods: dict[str, dict[str, str]]) -> set[str]:
    """The names a NetworkPolicy peer stands for: local pods, or 'namespace/app' outside."""
    if "ipBlock" in peer:
        return {f"cidr:{peer['ipBlock']['cidr']}"}
    if "namespaceSelector" in peer:
        namespace = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        app = next(iter(peer.get("podSelector", {}).get("matchLabels", {}).values()), "*")
        return {f"{namespace}/{app}"}
    return _pods_of(peer["podSelector"], pods)


def network_edges(docs: tuple[dict[str, Any], ...]) -> set[tuple[str, str, int]]:
    """(from, to, port) for every connection both sides' policies allow; 'any' is anyone outside."""
    pods = {
        workload["metadata"]["name"].removeprefix("candor-"): workload["spec"]["template"]["metadata"]["labels"]
        for workload in of_kind(docs, *WORKLOADS)
    }
    egress: set[tuple[str, str, int]] = set()
    ingress: set[tuple[str, str, int]] = set()
    for policy in of_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        selected = _pods_of(spec["podSelector"], pods) if spec["podSelector"] else set(pods)
        for rule in spec.get("egress", []):
            targets = set().union(*(_peer(peer, pods) for peer in rule["to"]))
            egress |= {(pod, target, port["port"]) for pod in selected for target in targets for port in rule["ports"]}
        for rule in spec.get("ingress", []):
            # A rule naming no source admits anyone: outside, and every pod inside.
            sources = set().union(*(_peer(peer, pods) for peer in rule["from"])) if "from" in rule else {"any", *pods}
            ingress |= {(src, pod, port["port"]) for pod in selected for src in sources for port in rule["ports"]}
    # Inside the namespace a connection needs both ends to allow it; outside, only our end counts.
    inside = {edge for edge in egress if edge[1] in pods} & {edge for edge in ingress if edge[0] in pods}
    leaving = {edge for edge in egress if edge[1] not in pods}
    arriving = {edge for edge in ingress if edge[0] not in pods}
    return inside | leaving | arriving


def test_network_policies_allow_exactly_the_edges_of_the_architecture() -> None:
    docs = render("components/network-policies")
    everyone = (*CANDOR_SERVICES, "review", "nats", "qdrant")
    expected = {
        ("any", "gateway", 50051),
        ("any", "review", ports.REVIEW_PORT),
        ("review", "gateway", 50051),
        ("review", "observability/otel-collector", 4317),
        *((service, "nats", 4222) for service in CANDOR_SERVICES),
        *((service, "observability/otel-collector", 4317) for service in CANDOR_SERVICES),
        *(("monitoring/prometheus", service, ports.METRICS_PORT) for service in (*CANDOR_SERVICES, "review")),
        ("nats", "nats", 6222),
        ("matcher", "qdrant", 6333),
        ("matcher", "qdrant", 6334),
        ("qdrant", "qdrant", 6335),
        *((pod, "kube-system/kube-dns", 53) for pod in everyone),
    }
    assert network_edges(docs) == expected
    default_deny = named(docs, "NetworkPolicy", "default-deny-all")["spec"]
    assert default_deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_prod_adds_only_the_audit_database_edge() -> None:
    prod = network_edges(render("overlays/prod"))
    component = network_edges(render("components/network-policies"))
    assert prod - component == {("audit", "cidr:10.0.0.0/8", 5432)}
    environment = container_environment(
        render("overlays/prod"), named(render("overlays/prod"), "Deployment", "candor-audit")
    )
    assert environment["CANDOR_AUDIT_BACKEND"] == "postgres"


def test_without_the_component_only_the_qdrant_peer_port_is_fenced() -> None:
    docs = render("components/gpu")
    policies = of_kind(docs, "NetworkPolicy")
    assert [policy["metadata"]["name"] for policy in policies] == ["candor-qdrant-peers"]
    ingress = policies[0]["spec"]["ingress"]
    assert ingress[0]["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "candor-qdrant"}}}]
    assert ingress[0]["ports"] == [{"port": ports.QDRANT_P2P_PORT}]


def test_the_gpu_component_puts_the_embedder_on_gpu_nodes() -> None:
    docs = render("components/gpu")
    pod = named(docs, "Deployment", "candor-embedder")["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "CANDOR_ONNX_PROVIDERS", "value": "cuda"} in pod["containers"][0]["env"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    others = [named(docs, "Deployment", f"candor-{name}") for name in CANDOR_SERVICES if name != "embedder"]
    assert all(
        "nvidia.com/gpu" not in d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] for d in others
    )


def test_the_autoscaling_component_scales_detector_and_embedder_on_cpu() -> None:
    docs = render("components/autoscaling")
    scalers = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in of_kind(docs, "HorizontalPodAutoscaler")}
    assert set(scalers) == {"candor-detector", "candor-embedder"}
    for scaler in scalers.values():
        assert scaler["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert scaler["spec"]["minReplicas"] >= 2


#: The services Kubernetes routes calls to through a Service: they must leave its endpoints before
#: they stop listening, or calls in the gap are refused.
BEHIND_A_SERVICE = ("candor-gateway", "candor-review")


@pytest.mark.parametrize("target", TARGETS)
def test_every_service_has_a_disruption_budget_and_its_replicas_apart(target: str) -> None:
    """Every target, dev included: a drain or upgrade takes one pod of a service at a time, and
    replicas of one service prefer different nodes (make test-scale: one gateway or detector of two
    lost costs no search)."""
    docs = render(target)
    budgets = {
        doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]: doc
        for doc in of_kind(docs, "PodDisruptionBudget")
    }
    for workload in of_kind(docs, *WORKLOADS):
        own = workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        if own == "candor-matcher" and workload["spec"].get("replicas", 1) == 1:
            continue  # one matcher owns the embedded gallery: a budget would block every node drain
        assert own in budgets, f"{target}: no PodDisruptionBudget for {own}"
        budget = budgets[own]["spec"]
        assert budget.get("maxUnavailable") == 1 or budget.get("minAvailable") == 2, own
        if workload["kind"] == "Deployment":
            anti = workload["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            terms = [term["podAffinityTerm"] for term in anti["preferredDuringSchedulingIgnoredDuringExecution"]]
            assert any(
                term["topologyKey"] == "kubernetes.io/hostname" and "app.kubernetes.io/name" in term["matchLabelKeys"]
                for term in terms
            ), own


@pytest.mark.parametrize("target", TARGETS)
def test_a_pod_stops_only_after_leaving_its_service_and_draining_its_work(target: str) -> None:
    """On SIGTERM a service reports NOT_SERVING, finishes its calls within CANDOR_SHUTDOWN_GRACE_S,
    then drains NATS (replies to work in flight still go out) for up to DRAIN_TIMEOUT_S. Those
    behind a Service first wait in preStop for the endpoint to go; the kubelet must not kill a pod
    before all of that is over."""
    docs = render(target)
    for workload in of_kind(docs, "Deployment"):
        name = workload["metadata"]["name"]
        spec = workload["spec"]["template"]["spec"]
        hook = spec["containers"][0].get("lifecycle", {}).get("preStop", {})
        waits = int(hook["sleep"]["seconds"]) if "sleep" in hook else 0
        if name in BEHIND_A_SERVICE:
            assert waits >= PRESTOP_S, f"{target}: {name} stops listening while its Service still routes to it"
        environment = container_environment(docs, workload)
        grace = float(environment.get("CANDOR_SHUTDOWN_GRACE_S", catalogue.SHUTDOWN_GRACE_S.default))
        needed = waits + grace + DRAIN_TIMEOUT_S
        assert spec["terminationGracePeriodSeconds"] >= needed, (
            f"{target}: {name} is killed after {spec['terminationGracePeriodSeconds']} s, before its "
            f"{waits} s preStop, {grace:g} s grace and {DRAIN_TIMEOUT_S:g} s NATS drain ({needed:g} s)"
        )

"""deploy/k8s/components/monitoring and queue-autoscaling: the alert rules pass promtool (syntax and
their unit tests), every metric the alerts and the dashboard use is one the services export, the
ServiceMonitor finds every service's metrics port, and KEDA scales on the import consumers that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from candor_kit import metrics, ports, subjects
from candor_kit.ingest import Stage
from candor_kit.wheel_packs import SFACE_MODEL_ID
from tests.deploy.manifests import CANDOR_SERVICES, K8S, named, of_kind, render

MONITORING = K8S / "components" / "monitoring"
COMPOSE_PROMETHEUS = K8S.parent / "compose" / "prometheus"
#: Series every Prometheus has, beside the services' own.
PROMETHEUS_SERIES = {"up"}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: install Debian's prometheus package (.ci/run does)"
    return found


def alert_rules() -> dict[str, Any]:
    """The PrometheusRule's groups, as a Prometheus rule file."""
    rule = yaml.safe_load((MONITORING / "prometheus-rule.yaml").read_text())
    return {"groups": rule["spec"]["groups"]}


def write_rule_file(folder: Path) -> Path:
    """The alert rules as a plain Prometheus rule file (what promtool and Prometheus read)."""
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump(alert_rules()))
    return path


def exported_series() -> set[str]:
    """Every series name the services' metrics produce (counters' _total, histograms' parts)."""
    assert metrics.GRPC_HANDLED is not None  # the module registered its metrics on import
    names = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("candor_"):
            continue
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


def series_in(expression: str) -> set[str]:
    return set(re.findall(r"\b(candor_[a-z_]+|up)\b(?=\s*[{\[)\s=<>]|$)", expression))


def test_the_alert_rules_pass_promtool_check(tmp_path: Path) -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(write_rule_file(tmp_path))], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in alert_rules()['groups'])} rules found" in result.stdout


def test_the_compose_stacks_alert_rules_pass_promtool_and_are_kubernetes_own() -> None:
    # Compose's Prometheus reads its own copy of the rules: it must load, and say what Kubernetes says.
    compose_rules = COMPOSE_PROMETHEUS / "alerts.yaml"
    result = subprocess.run([promtool(), "check", "rules", str(compose_rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load(compose_rules.read_text()) == alert_rules()


def test_each_alert_fires_on_its_series_in_promtools_unit_tests(tmp_path: Path) -> None:
    write_rule_file(tmp_path)
    shutil.copy(MONITORING / "alerts-test.yaml", tmp_path)
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts-test.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "alerts-test.yaml").read_text()))
    assert {"CandorServiceDown", "CandorAuditChainBroken", "CandorAuditBacklog", "CandorInternalApiProbed"} <= tested


def test_alerts_and_dashboard_use_only_series_the_services_export() -> None:
    exported = exported_series() | PROMETHEUS_SERIES
    expressions = [rule["expr"] for group in alert_rules()["groups"] for rule in group["rules"]]
    dashboard = json.loads((MONITORING / "candor-dashboard.json").read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = set().union(*(series_in(expression) for expression in expressions))
    assert used - exported == set()
    # And every metric the services export is on the dashboard or behind an alert.
    families = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in exported}
    unwatched = {f for f in families if f != "up" and not any(u.startswith(f) for u in used)}
    assert unwatched == set()


def test_the_dashboard_is_one_grafana_dashboard_with_a_prometheus_datasource_variable() -> None:
    dashboard = json.loads((MONITORING / "candor-dashboard.json").read_text())
    assert dashboard["uid"] == "candor-overview"
    assert [v["type"] for v in dashboard["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])
    config_map = named(render("components/monitoring"), "ConfigMap", "candor-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["candor-dashboard.json"]) == dashboard


def test_the_service_monitor_scrapes_every_services_metrics_port() -> None:
    docs = render("components/monitoring")
    monitor = named(docs, "ServiceMonitor", "candor")
    selected = set(monitor["spec"]["selector"]["matchExpressions"][0]["values"])
    assert selected == {f"candor-{service}" for service in (*CANDOR_SERVICES, "review")}
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
    for service in (*CANDOR_SERVICES, "review"):
        exposed = named(docs, "Service", f"candor-{service}")["spec"]["ports"]
        assert {"name": "metrics", "port": ports.METRICS_PORT, "targetPort": "metrics"} in exposed


@pytest.mark.parametrize(("service", "stage"), [("detector", "detect"), ("embedder", "embed")])
def test_keda_scales_the_import_workers_on_their_consumers_lag_and_on_cpu(service: str, stage: str) -> None:
    docs = render("components/queue-autoscaling")
    scaled = named(docs, "ScaledObject", f"candor-{service}")["spec"]
    assert scaled["scaleTargetRef"]["name"] == f"candor-{service}"
    assert scaled["minReplicaCount"] >= 2
    queue, cpu = scaled["triggers"]
    assert queue["type"] == "nats-jetstream" and cpu["type"] == "cpu"
    assert queue["metadata"]["stream"] == subjects.ingest_stream(stage)
    assert queue["metadata"]["consumer"] == Stage(stage, SFACE_MODEL_ID).consumer
    host, _, port = queue["metadata"]["natsServerMonitoringEndpoint"].partition(":")
    monitor_ports = {p["name"]: p["port"] for p in named(docs, "Service", host)["spec"]["ports"]}
    assert monitor_ports["monitor"] == int(port) == ports.NATS_MONITOR_PORT
    assert not of_kind(docs, "HorizontalPodAutoscaler"), "KEDA makes its own; the CPU HPAs must not be there too"
    keda = named(docs, "NetworkPolicy", "nats-monitor-from-keda")["spec"]["ingress"][0]
    assert keda["ports"] == [{"port": ports.NATS_MONITOR_PORT}]

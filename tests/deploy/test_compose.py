"""deploy/compose: the files validate against the Compose Specification after interpolation (the
offline equivalent of `docker compose config`), Debian's docker-compose 1.29 reads them without
ignoring anything, they set only known settings and every required one, and give every service a
health check, healthy dependencies, a memory limit and named volumes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml
from dotenv import dotenv_values

from candor_cli import compose
from candor_cli.deploy_secrets import init_secrets
from candor_kit import catalogue, ports
from tests.deploy.manifests import CANDOR_SERVICES, COMPOSE_DIR, compose_model
from tests.deploy.test_monitoring import alert_rules

STACKS = {
    "compose.yaml": (),
    "compose.yaml + compose.e2e.yaml": ("compose.e2e.yaml",),
    "the container run": ("compose.e2e.yaml", "compose.containers.yaml"),
    "the scale-out run": ("compose.e2e.yaml", "compose.containers.yaml", "compose.scale.yaml"),
}
INFRASTRUCTURE = ("nats", "qdrant", "postgres", "otel-collector", "jaeger", "prometheus")


def compose_schema() -> dict:  # type: ignore[type-arg]
    """The Compose Specification's JSON schema, as check-jsonschema vendors it."""
    schema = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(schema.read_text())


@pytest.mark.parametrize("extra", STACKS.values(), ids=STACKS.keys())
def test_the_compose_files_validate_against_the_compose_specification(extra: tuple[str, ...]) -> None:
    model = compose_model(*extra)
    jsonschema.validate(model, compose_schema())
    assert set(model["services"]) >= {*CANDOR_SERVICES, *INFRASTRUCTURE}


@pytest.mark.parametrize("extra", STACKS.values(), ids=STACKS.keys())
def test_debian_docker_compose_reads_the_files_and_ignores_nothing(extra: tuple[str, ...], tmp_path: Path) -> None:
    docker_compose = shutil.which("docker-compose")
    if docker_compose is None:
        pytest.fail("docker-compose is not installed (Debian package docker-compose; make test installs it as root)")
    init_secrets(tmp_path / "secrets")  # compose reads nats.env itself
    files = [arg for name in ("compose.yaml", *extra) for arg in ("--file", str(COMPOSE_DIR / name))]
    result = subprocess.run(
        [docker_compose, "--compatibility", *files, "config"],
        env={**os.environ, "SECRETS_DIR": str(tmp_path / "secrets")},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "ignored" not in result.stderr and "unsupported" not in result.stderr.lower(), result.stderr
    assert set(yaml.safe_load(result.stdout)["services"]) >= {*CANDOR_SERVICES, *INFRASTRUCTURE}


def test_the_container_run_keeps_every_container_on_one_internal_network() -> None:
    model = compose_model("compose.e2e.yaml", "compose.containers.yaml")
    assert model["networks"] == {"candor": {"internal": True}}
    assert all(service["networks"] == ["candor"] for service in model["services"].values())
    assert compose.service_environment(model, "matcher")["CANDOR_MATCHER_BACKEND"] == "edge"


def test_the_scale_out_run_is_a_three_node_nats_cluster_that_every_service_reaches_whole() -> None:
    model = compose_model(*STACKS["the scale-out run"])
    nodes = ("nats", "nats-2", "nats-3")
    assert all(node in model["services"] for node in nodes)
    cluster_conf = (COMPOSE_DIR / "nats" / "cluster.conf").read_text()
    assert (
        all(f'"nats://{node}:6222"' in cluster_conf for node in nodes)
        and "server_name: $NATS_SERVER_NAME" in cluster_conf
    )
    names = {model["services"][node]["environment"]["NATS_SERVER_NAME"] for node in nodes}
    assert len(names) == 3
    for service in CANDOR_SERVICES:
        environment = compose.service_environment(model, service)
        assert environment["CANDOR_NATS_URL"] == ",".join(f"nats://{node}:4222" for node in nodes), service
        for setting in ("CANDOR_AUDIT_STREAM_REPLICAS", "CANDOR_INGEST_STREAM_REPLICAS", "CANDOR_PHOTO_STORE_REPLICAS"):
            assert environment.get(setting, "3") == "3", (service, setting)
    assert compose.service_environment(model, "gateway")["CANDOR_PHOTO_STORE_REPLICAS"] == "3"


def test_an_invalid_compose_file_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text('services:\n  gateway:\n    image: x\n    helthcheck: {test: [CMD, "true"]}\n')
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(compose.load([broken]), compose_schema())
    unset = tmp_path / "unset.yaml"
    unset.write_text("services:\n  gateway:\n    image: candor/gateway:${NO_SUCH_VARIABLE}\n")
    with pytest.raises(compose.ComposeError, match="NO_SUCH_VARIABLE is not set"):
        compose.load([unset])


@pytest.mark.parametrize("extra", STACKS.values(), ids=STACKS.keys())
def test_each_service_gets_only_known_settings_and_every_required_one(extra: tuple[str, ...]) -> None:
    model = compose_model(*extra)
    problems = []
    for service in (*CANDOR_SERVICES, "review"):
        problems += catalogue.check_environment(service, compose.service_environment(model, service))
    assert problems == []


def test_every_dot_env_variable_is_used_and_every_used_one_is_defined() -> None:
    defined = set(dotenv_values(COMPOSE_DIR / ".env"))
    text = "".join((COMPOSE_DIR / name).read_text() for name in ("compose.yaml", "compose.e2e.yaml"))
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert used | {"COMPOSE_PROJECT_NAME"} == defined, "compose itself reads COMPOSE_PROJECT_NAME"


def test_every_candor_setting_in_dot_env_is_one_the_services_read() -> None:
    known = {setting.name for service in (*CANDOR_SERVICES, "review") for setting in catalogue.settings_for(service)}
    tunables = {name for name in dotenv_values(COMPOSE_DIR / ".env") if name.startswith("CANDOR_")} - {"CANDOR_VERSION"}
    assert tunables <= known, tunables - known


def test_every_service_has_a_health_check_a_memory_limit_and_healthy_dependencies() -> None:
    model = compose_model()
    for name, service in model["services"].items():
        assert service["deploy"]["resources"]["limits"]["memory"], name
        if name != "otel-collector":  # distroless: nothing to probe with (see compose.yaml)
            assert service["healthcheck"]["test"], name
    for name in CANDOR_SERVICES:
        service = model["services"][name]
        assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "candor_kit.healthcheck"]
        assert service["depends_on"]["nats"] == {"condition": "service_healthy"}
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        environment = compose.service_environment(model, name)
        assert environment["CANDOR_GRPC_ADDRESS"].endswith(f":{ports.GRPC_PORT}")
        assert environment["CANDOR_HEALTH_ADDRESS"].endswith(f":{ports.HEALTH_PORT}")
        assert environment["CANDOR_NATS_URL"] == f"nats://nats:{ports.NATS_CLIENT_PORT}"
        assert environment["CANDOR_NATS_USER"] == name
    gateway = model["services"]["gateway"]["depends_on"]
    assert all(gateway[name] == {"condition": "service_healthy"} for name in CANDOR_SERVICES if name != "gateway")
    assert model["services"]["matcher"]["depends_on"]["qdrant"] == {"condition": "service_healthy"}


def test_state_lives_on_named_volumes_and_only_loopback_ports_are_published() -> None:
    model = compose_model("compose.e2e.yaml")
    declared = set(model["volumes"])
    for name, service in model["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert source in declared or source.startswith("."), f"{name}: {mount}"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    used = {mount.split(":")[0] for service in model["services"].values() for mount in service.get("volumes", [])}
    assert declared <= used
    matcher = compose.service_environment(model, "matcher")
    assert matcher["CANDOR_QDRANT_URL"] == f"http://qdrant:{ports.QDRANT_HTTP_PORT}"


def test_the_audit_chain_lives_in_the_compose_postgres() -> None:
    model = compose_model()
    audit = compose.service_environment(model, "audit")
    assert audit["CANDOR_AUDIT_BACKEND"] == "postgres"
    assert audit["CANDOR_AUDIT_POSTGRES_DSN_FILE"] == "/run/secrets/audit-postgres-dsn"
    assert model["services"]["audit"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert "ports" not in model["services"]["postgres"], "the database is not published"
    assert audit["CANDOR_AUDIT_SIGNING_KEY_FILE"] == "/run/secrets/audit-signing-key"
    assert "audit-signing-key" in model["services"]["audit"]["secrets"]
    assert model["secrets"]["audit-signing-key"]["file"] == "./secrets/audit-signing-key.pem"


def test_prometheus_scrapes_every_services_metrics_port_under_the_alert_rules_job_names() -> None:
    model = compose_model()
    config = yaml.safe_load(
        (COMPOSE_DIR / compose.mounts(model, "prometheus")["/etc/prometheus/prometheus.yml"]).read_text()
    )
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    scraped = (*CANDOR_SERVICES, "review")
    assert targets == {f"candor-{name}": [f"{name}:{ports.METRICS_PORT}"] for name in scraped}
    for name in scraped:
        address = compose.service_environment(model, name)["CANDOR_METRICS_ADDRESS"]
        assert address == f"0.0.0.0:{ports.METRICS_PORT}", name
    # The service-down alert selects its jobs by this pattern: every compose job must fall under it.
    rules = (COMPOSE_DIR.parent / "k8s/components/monitoring/prometheus-rule.yaml").read_text()
    found = re.search(r'up\{job=~"([^"]+)"\}', rules)
    assert found is not None
    assert all(re.fullmatch(found.group(1), job) for job in targets), (found.group(1), list(targets))


def test_compose_prometheus_loads_the_same_alert_rules_as_kubernetes() -> None:
    mounts = compose.mounts(compose_model(), "prometheus")
    assert yaml.safe_load((COMPOSE_DIR / mounts["/etc/prometheus/alerts.yaml"]).read_text()) == alert_rules()
    config = yaml.safe_load((COMPOSE_DIR / mounts["/etc/prometheus/prometheus.yml"]).read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yaml"]


def test_nats_in_compose_uses_the_same_users_file_as_kubernetes() -> None:
    mounts = compose_model()["services"]["nats"]["volumes"]
    auth = next(mount for mount in mounts if mount.endswith("/etc/nats/auth.conf:ro"))
    assert (COMPOSE_DIR / auth.split(":")[0]).resolve() == (COMPOSE_DIR.parent / "k8s/base/nats/auth.conf").resolve()

"""The settings catalogue is the one declaration of what each service reads, and the health check
command that container health checks run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from candor_audit import AuditSettings
from candor_detector import DetectorSettings
from candor_embedder import EmbedderSettings
from candor_gateway.service import GatewaySettings
from candor_kit import ConfigError, EnvReader, catalogue, healthcheck
from candor_kit.grpc_server import GrpcServer
from candor_matcher.service import MatcherSettings
from tests.conftest import INTERNAL

READERS = {
    "audit": AuditSettings,
    "detector": DetectorSettings,
    "embedder": EmbedderSettings,
    "gateway": GatewaySettings,
    "matcher": MatcherSettings,
}


class RecordingEnvironment(dict):  # type: ignore[type-arg]
    """An environment that remembers every name looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, name, default=None):  # type: ignore[no-untyped-def]
        self.read.add(name)
        return super().get(name, default)


@pytest.mark.parametrize("service", sorted(READERS))
def test_each_service_reads_exactly_the_settings_the_catalogue_declares(service: str, tmp_path: Path) -> None:
    declared = {setting.name for setting in catalogue.settings_for(service) if not setting.name.startswith("OTEL_")}
    read: set[str] = set()
    # Both matcher backends, so the settings of each are read once.
    for backend in ("edge", "server"):
        environment = RecordingEnvironment({"CANDOR_MATCHER_BACKEND": backend})
        try:
            READERS[service].from_env(EnvReader(environment))
        except ConfigError:
            pass  # required values are missing; what matters is what was looked up
        read |= environment.read
    assert read == declared


def test_required_and_conditionally_required_settings_are_named() -> None:
    assert catalogue.check_environment("matcher", {}) == [
        "matcher: CANDOR_NATS_URL is required",
        "matcher: CANDOR_SERVICE_TOKEN_SHA256_FILE is required",
        "matcher: CANDOR_MATCHER_DATA_DIR is required when CANDOR_MATCHER_BACKEND=edge",
    ]
    server = {"CANDOR_NATS_URL": "nats://n:4222", "CANDOR_MATCHER_BACKEND": "server", **INTERNAL}
    assert catalogue.check_environment("matcher", server) == [
        "matcher: CANDOR_QDRANT_URL is required when CANDOR_MATCHER_BACKEND=server"
    ]
    assert catalogue.check_environment("detector", {"CANDOR_NATS_URL": "x", "CANDOR_AUDIT_DB": "/a", **INTERNAL}) == [
        "detector: CANDOR_AUDIT_DB is not a setting detector reads"
    ]


def test_a_setting_outside_its_bounds_or_choices_is_refused() -> None:
    env = EnvReader({"CANDOR_EMBEDDER_MAX_BATCH": "0", "CANDOR_EMBEDDER_ENGINE": "magic"})
    env.get(catalogue.EMBEDDER_MAX_BATCH)
    env.get(catalogue.EMBEDDER_ENGINE)
    with pytest.raises(ConfigError) as refused:
        env.done()
    assert "CANDOR_EMBEDDER_MAX_BATCH=0 is outside [1, 1024]" in str(refused.value)
    assert "CANDOR_EMBEDDER_ENGINE='magic' must be one of sface, dlib" in str(refused.value)


def test_nats_user_and_password_file_go_together(tmp_path: Path) -> None:
    base = {"CANDOR_NATS_URL": "nats://127.0.0.1:4222", "CANDOR_MATCHER_DATA_DIR": str(tmp_path), **INTERNAL}
    with pytest.raises(ConfigError, match="CANDOR_NATS_USER and CANDOR_NATS_PASSWORD_FILE go together"):
        MatcherSettings.from_env(EnvReader({**base, "CANDOR_NATS_USER": "matcher"}))
    password = tmp_path / "password"
    password.write_text("pw\n")
    settings = MatcherSettings.from_env(
        EnvReader({**base, "CANDOR_NATS_USER": "matcher", "CANDOR_NATS_PASSWORD_FILE": str(password)})
    )
    assert settings.common.nats_user == "matcher" and "pw" not in repr(settings)


async def test_the_health_check_command_follows_the_health_only_listener() -> None:
    server = GrpcServer("127.0.0.1:0", 1 << 20, ["candor.test.v1.Test"], health_address="127.0.0.1:0")
    await server.start()
    address = f"127.0.0.1:{server.health_port}"
    # The check blocks, as it does in a container; the server needs this event loop meanwhile.
    try:
        assert await asyncio.to_thread(healthcheck.main, [address]) == 1  # NOT_SERVING until ready
        await server.mark_serving()
        assert await asyncio.to_thread(healthcheck.main, [address]) == 0
    finally:
        await server.stop(0)
    assert await asyncio.to_thread(healthcheck.main, [address]) == 1  # nothing listening


@pytest.mark.parametrize(
    ("dsn", "extra", "problem"),
    [
        ("host=db.internal dbname=audit user=audit", {}, "without sslmode=require"),
        ("host=db.internal dbname=audit user=audit sslmode=verify-full", {}, ""),
        ("host=db.internal dbname=audit user=audit", {"CANDOR_AUDIT_POSTGRES_PLAINTEXT": "allow"}, ""),
        ("host=127.0.0.1 port=5432 dbname=audit", {}, ""),
        ("host=/var/run/postgresql dbname=audit", {}, ""),
        ("this is = not a = dsn", {}, "not a libpq connection string"),
    ],
)
def test_the_audit_database_connection_is_checked_before_start(
    dsn: str, extra: dict[str, str], problem: str, tmp_path: Path
) -> None:
    secret = tmp_path / "dsn"
    secret.write_text(dsn + "\n")
    env = {
        "CANDOR_NATS_URL": "nats://127.0.0.1:4222",
        "CANDOR_AUDIT_BACKEND": "postgres",
        "CANDOR_AUDIT_POSTGRES_DSN_FILE": str(secret),
        "CANDOR_AUDIT_SIGNING_KEY_FILE": str(secret),  # only its presence is checked here
        **INTERNAL,
        **extra,
    }
    if problem:
        with pytest.raises(ConfigError, match=problem):
            AuditSettings.from_env(EnvReader(env))
    else:
        settings = AuditSettings.from_env(EnvReader(env))
        assert settings.postgres_dsn == dsn and settings.database is None
        assert dsn not in repr(settings)


def test_the_audit_backend_needs_its_own_setting() -> None:
    with pytest.raises(
        ConfigError, match="CANDOR_AUDIT_POSTGRES_DSN_FILE is required when CANDOR_AUDIT_BACKEND=postgres"
    ):
        AuditSettings.from_env(
            EnvReader({"CANDOR_NATS_URL": "nats://127.0.0.1:4222", "CANDOR_AUDIT_BACKEND": "postgres"})
        )
    with pytest.raises(ConfigError, match="CANDOR_AUDIT_DB is required when CANDOR_AUDIT_BACKEND=sqlite"):
        AuditSettings.from_env(EnvReader({"CANDOR_NATS_URL": "nats://127.0.0.1:4222"}))

"""Services refuse to start on a missing, invalid or unsafe configuration."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from candor_audit import AuditSettings
from candor_detector import DetectorSettings
from candor_gateway import GatewaySettings
from candor_kit import ConfigError, EnvReader
from candor_kit.aes_keys import generate_aes_key
from candor_kit.keys import generate_token_keys
from candor_kit.policy import DEFAULT_POLICY_YAML
from candor_matcher import MatcherSettings
from tests.conftest import INTERNAL


def test_missing_nats_url_is_named() -> None:
    with pytest.raises(ConfigError, match="CANDOR_NATS_URL is required"):
        MatcherSettings.from_env(EnvReader({"CANDOR_MATCHER_DATA_DIR": "/tmp/x"}))


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        AuditSettings.from_env(EnvReader({"CANDOR_NATS_URL": "http://x", "CANDOR_GRPC_ADDRESS": "nope"}))
    message = str(error.value)
    assert "nats:// or tls://" in message and "host:port" in message and "CANDOR_AUDIT_DB is required" in message


def test_detector_limit_above_the_message_limit_is_refused() -> None:
    env = {"CANDOR_NATS_URL": "nats://127.0.0.1:4222", "CANDOR_DETECTOR_MAX_IMAGE_BYTES": str(40 << 20)}
    with pytest.raises(ConfigError, match="exceeds CANDOR_MAX_MESSAGE_BYTES"):
        DetectorSettings.from_env(EnvReader(env))


def token_keys(folder: Path) -> Path:
    """A PEM file with one trusted token public key."""
    keys = folder / "token-keys.pem"
    keys.write_bytes(generate_token_keys()[1])
    return keys


def photo_key(folder: Path) -> Path:
    """A photo-store key file."""
    key = folder / "photo-key"
    key.write_bytes(generate_aes_key())
    return key


def policy_file(folder: Path, text: str = DEFAULT_POLICY_YAML) -> Path:
    """A policy.yaml in ``folder``."""
    path = folder / "policy.yaml"
    path.write_text(text)
    return path


def gateway_env(folder: Path) -> dict[str, str]:
    """A gateway's settings that pass, but for the model registry (required unless uncalibrated
    models are allowed)."""
    return {
        "CANDOR_NATS_URL": "nats://127.0.0.1:4222",
        "CANDOR_GATEWAY_JWT_ISSUER": "candor-test",
        "CANDOR_GATEWAY_JWT_KEYS_FILE": str(token_keys(folder)),
        "CANDOR_GATEWAY_PHOTO_KEY_FILE": str(photo_key(folder)),
        "CANDOR_GATEWAY_POLICY_FILE": str(policy_file(folder)),
    }


def test_gateway_without_a_valid_policy_file_is_refused(tmp_path: Path) -> None:
    env = {
        "CANDOR_NATS_URL": "nats://127.0.0.1:4222",
        "CANDOR_GATEWAY_JWT_ISSUER": "candor-test",
        "CANDOR_GATEWAY_JWT_KEYS_FILE": str(token_keys(tmp_path)),
        "CANDOR_GATEWAY_PHOTO_KEY_FILE": str(photo_key(tmp_path)),
        "CANDOR_MODEL_REGISTRY": str(tmp_path / "models"),
    }
    with pytest.raises(ConfigError, match="CANDOR_GATEWAY_POLICY_FILE is required"):
        GatewaySettings.from_env(EnvReader(env))
    bad = policy_file(tmp_path, DEFAULT_POLICY_YAML.replace("max: 20", "max: 2"))
    with pytest.raises(ConfigError, match=r"candidates: Value error, default \(10\) exceeds max \(2\)"):
        GatewaySettings.from_env(EnvReader({**env, "CANDOR_GATEWAY_POLICY_FILE": str(bad)}))
    settings = GatewaySettings.from_env(EnvReader({**env, "CANDOR_GATEWAY_POLICY_FILE": str(policy_file(tmp_path))}))
    assert settings.policy.current.purposes == ["investigation", "missing-person", "victim-identification"]
    assert settings.photos.bucket_name == "CANDOR_PHOTOS"
    assert not settings.calibration.allow_uncalibrated


def test_the_gateway_needs_a_well_formed_photo_key(tmp_path: Path) -> None:
    env = {
        "CANDOR_NATS_URL": "nats://127.0.0.1:4222",
        "CANDOR_GATEWAY_JWT_ISSUER": "candor-test",
        "CANDOR_GATEWAY_JWT_KEYS_FILE": str(token_keys(tmp_path)),
        "CANDOR_GATEWAY_ALLOW_UNCALIBRATED": "true",
        "CANDOR_GATEWAY_POLICY_FILE": str(policy_file(tmp_path)),
    }
    with pytest.raises(ConfigError, match="CANDOR_GATEWAY_PHOTO_KEY_FILE is required"):
        GatewaySettings.from_env(EnvReader(env))
    key = tmp_path / "photo-key"
    key.write_text("c2hvcnQ=\n")
    with pytest.raises(ConfigError, match="must be 32 bytes"):
        GatewaySettings.from_env(EnvReader({**env, "CANDOR_GATEWAY_PHOTO_KEY_FILE": str(key)}))
    key.write_text("not base64!")
    with pytest.raises(ConfigError, match="photo key"):
        GatewaySettings.from_env(EnvReader({**env, "CANDOR_GATEWAY_PHOTO_KEY_FILE": str(key)}))


def test_gateway_without_a_model_registry_is_refused_unless_uncalibrated_models_are_allowed(tmp_path: Path) -> None:
    env = gateway_env(tmp_path)
    with pytest.raises(ConfigError, match="CANDOR_MODEL_REGISTRY is required"):
        GatewaySettings.from_env(EnvReader(env))
    allowed = GatewaySettings.from_env(EnvReader({**env, "CANDOR_GATEWAY_ALLOW_UNCALIBRATED": "true"}))
    assert allowed.calibration.allow_uncalibrated


def test_service_process_exits_2_on_invalid_configuration() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDOR_")}
    result = subprocess.run(
        [sys.executable, "-m", "candor_gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "config_invalid" in result.stderr and "CANDOR_NATS_URL is required" in result.stderr


def test_plaintext_grpc_on_a_network_address_is_refused() -> None:
    env = {"CANDOR_NATS_URL": "nats://127.0.0.1:4222", "CANDOR_MATCHER_DATA_DIR": "/tmp/g", **INTERNAL}
    with pytest.raises(ConfigError, match="not a loopback address and no TLS"):
        MatcherSettings.from_env(EnvReader({**env, "CANDOR_GRPC_ADDRESS": "0.0.0.0:50051"}))
    allowed = MatcherSettings.from_env(
        EnvReader({**env, "CANDOR_GRPC_ADDRESS": "0.0.0.0:50051", "CANDOR_GRPC_PLAINTEXT": "allow"})
    )
    assert allowed.common.grpc_address == "0.0.0.0:50051"
    assert MatcherSettings.from_env(EnvReader({**env, "CANDOR_GRPC_ADDRESS": "[::1]:50051"}))


def test_the_matchers_audit_outbox_is_in_its_gallery_folder_unless_set() -> None:
    env = {"CANDOR_NATS_URL": "nats://127.0.0.1:4222", "CANDOR_MATCHER_DATA_DIR": "/tmp/g", **INTERNAL}
    assert MatcherSettings.from_env(EnvReader(env)).audit_outbox == Path("/tmp/g/audit-outbox.sqlite3")
    chosen = {**env, "CANDOR_MATCHER_AUDIT_OUTBOX": "/var/lib/outbox.sqlite3"}
    assert MatcherSettings.from_env(EnvReader(chosen)).audit_outbox == Path("/var/lib/outbox.sqlite3")
    # The Qdrant server's matchers may have no disk of their own: no outbox unless one is set.
    server = {"CANDOR_NATS_URL": "nats://127.0.0.1:4222", "CANDOR_MATCHER_BACKEND": "server", **INTERNAL}
    server["CANDOR_QDRANT_URL"] = "http://qdrant:6333"
    assert MatcherSettings.from_env(EnvReader(server)).audit_outbox is None
    assert MatcherSettings.from_env(
        EnvReader({**server, "CANDOR_MATCHER_AUDIT_OUTBOX": "/data/o.sqlite3"})
    ).audit_outbox == Path("/data/o.sqlite3")


def test_a_metrics_address_must_be_host_and_port() -> None:
    env = {"CANDOR_NATS_URL": "nats://127.0.0.1:4222", "CANDOR_MATCHER_DATA_DIR": "/tmp/g", **INTERNAL}
    with pytest.raises(ConfigError, match="CANDOR_METRICS_ADDRESS='9464:x' is not host:port"):
        MatcherSettings.from_env(EnvReader({**env, "CANDOR_METRICS_ADDRESS": "9464:x"}))
    assert MatcherSettings.from_env(EnvReader(env)).common.metrics_address == ""
    served = MatcherSettings.from_env(EnvReader({**env, "CANDOR_METRICS_ADDRESS": "0.0.0.0:9464"}))
    assert served.common.metrics_address == "0.0.0.0:9464"


def test_half_a_tls_configuration_is_refused() -> None:
    env = {
        "CANDOR_NATS_URL": "nats://127.0.0.1:4222",
        "CANDOR_MATCHER_DATA_DIR": "/tmp/g",
        "CANDOR_GRPC_TLS_CERT": "/nonexistent.pem",
    }
    with pytest.raises(ConfigError) as error:
        MatcherSettings.from_env(EnvReader(env))
    assert "go together" in str(error.value) and "is not a file" in str(error.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"CANDOR_MATCHER_BACKEND": "server"}, "CANDOR_QDRANT_URL is required"),
        ({"CANDOR_MATCHER_BACKEND": "server", "CANDOR_QDRANT_URL": "qdrant:6333"}, "http:// or https://"),
        (
            {"CANDOR_MATCHER_BACKEND": "server", "CANDOR_QDRANT_URL": "http://q:6333", "CANDOR_QDRANT_API_KEY": "k"},
            "in the clear",
        ),
        ({"CANDOR_MATCHER_BACKEND": "faiss"}, "must be one of edge, server"),
    ],
)
def test_matcher_backend_settings_are_checked(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MatcherSettings.from_env(EnvReader({"CANDOR_NATS_URL": "nats://127.0.0.1:4222", **extra}))


def test_server_backend_settings_keep_the_api_key_out_of_their_repr() -> None:
    settings = MatcherSettings.from_env(
        EnvReader(
            {
                "CANDOR_NATS_URL": "nats://127.0.0.1:4222",
                "CANDOR_MATCHER_BACKEND": "server",
                "CANDOR_QDRANT_URL": "https://qdrant.internal:6333",
                "CANDOR_QDRANT_API_KEY": "sekrit-key",
                "CANDOR_QDRANT_SHARDS": "6",
                "CANDOR_QDRANT_REPLICAS": "3",
                **INTERNAL,
            }
        )
    )
    assert (settings.shard_number, settings.replication_factor) == (6, 3)
    assert "sekrit-key" not in repr(settings)


def test_service_exits_1_with_the_reason_when_nats_is_unreachable(tmp_path: Path) -> None:
    from candor_cli.processes import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDOR_")}
    env.update(
        {"CANDOR_NATS_URL": f"nats://127.0.0.1:{free_port()}", "CANDOR_MATCHER_DATA_DIR": str(tmp_path), **INTERNAL}
    )
    result = subprocess.run(
        [sys.executable, "-m", "candor_matcher"], env=env, capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 1
    assert "startup_failed" in result.stderr and "cannot connect to NATS" in result.stderr


def test_gateway_needs_exactly_one_source_of_token_keys_and_an_issuer(tmp_path: Path) -> None:
    base = {"CANDOR_NATS_URL": "nats://127.0.0.1:4222", "CANDOR_GATEWAY_POLICY_FILE": str(policy_file(tmp_path))}
    base["CANDOR_GATEWAY_ALLOW_UNCALIBRATED"] = "true"
    base["CANDOR_GATEWAY_PHOTO_KEY_FILE"] = str(photo_key(tmp_path))
    with pytest.raises(ConfigError) as refused:
        GatewaySettings.from_env(EnvReader(base))
    assert "CANDOR_GATEWAY_JWT_ISSUER is required" in str(refused.value)
    assert "set one of CANDOR_GATEWAY_JWT_KEYS_FILE and CANDOR_GATEWAY_JWT_KEYS" in str(refused.value)
    keys = token_keys(tmp_path)
    inline = {**base, "CANDOR_GATEWAY_JWT_ISSUER": "i", "CANDOR_GATEWAY_JWT_KEYS": keys.read_text()}
    assert GatewaySettings.from_env(EnvReader(inline)).tokens is not None
    private = tmp_path / "private.pem"
    private.write_bytes(generate_token_keys()[0])
    with pytest.raises(ConfigError, match="token keys: no PEM public key"):
        GatewaySettings.from_env(
            EnvReader({**base, "CANDOR_GATEWAY_JWT_ISSUER": "i", "CANDOR_GATEWAY_JWT_KEYS_FILE": str(private)})
        )


def test_an_internal_service_refuses_to_start_without_the_service_tokens_digest_or_with_the_token(
    tmp_path: Path,
) -> None:
    env = {"CANDOR_NATS_URL": "nats://127.0.0.1:4222", "CANDOR_MATCHER_DATA_DIR": "/tmp/g"}
    with pytest.raises(ConfigError, match="CANDOR_SERVICE_TOKEN_SHA256_FILE is required"):
        MatcherSettings.from_env(EnvReader(env))
    # The token itself (64 hex digits, as `candor secrets init` makes it) is refused: a service
    # holding it would hand it to whoever takes the service over.
    for wrong in (secrets.token_hex(32), "sha256:" + "0" * 63, "sha256:" + "G" * 64):
        given = tmp_path / "token"
        given.write_text(wrong + "\n")
        with pytest.raises(ConfigError, match="never the token itself"):
            MatcherSettings.from_env(EnvReader({**env, "CANDOR_SERVICE_TOKEN_SHA256_FILE": str(given)}))
    settings = MatcherSettings.from_env(EnvReader({**env, **INTERNAL}))
    assert settings.common.service_token_sha256 == hashlib.sha256(b"test-service-token").hexdigest()


def test_a_hedge_delay_not_under_the_request_timeout_is_refused(tmp_path: Path) -> None:
    env = {**gateway_env(tmp_path), "CANDOR_GATEWAY_ALLOW_UNCALIBRATED": "true", "CANDOR_REQUEST_TIMEOUT_S": "10"}
    with pytest.raises(ConfigError, match="CANDOR_GATEWAY_HEDGE_AFTER_S=10 is not under CANDOR_REQUEST_TIMEOUT_S=10"):
        GatewaySettings.from_env(EnvReader({**env, "CANDOR_GATEWAY_HEDGE_AFTER_S": "10"}))
    assert GatewaySettings.from_env(EnvReader(env)).hedge_after_s == 5.0
    assert GatewaySettings.from_env(EnvReader({**env, "CANDOR_GATEWAY_HEDGE_AFTER_S": "0"})).hedge_after_s == 0.0

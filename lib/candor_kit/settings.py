"""Configuration from environment variables only, read through the declarations in ``catalogue``
and checked before a service starts."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from candor_kit import catalogue
from candor_kit.errors import ConfigError
from candor_kit.setting import Setting


class EnvReader:
    """Reads declared settings from an environment mapping and names every bad value at once."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._problems: list[str] = []

    def raw(self, setting: Setting) -> str:
        """The value as given, or the declared default ("" for a required setting that is missing)."""
        value = self._environ.get(setting.name, "").strip()
        if value:
            return value
        why = setting.missing(self._environ)
        if why:
            self._problems.append(why)
        return setting.default or ""

    def get(self, setting: Setting) -> Any:
        """The typed value: int or float within bounds, a tuple for lists, a checked choice or file."""
        raw = self.raw(setting)
        if setting.kind in ("int", "float"):
            return self._number(setting, raw)
        if setting.kind == "list":
            return tuple(v.strip() for v in raw.split(",") if v.strip())
        if setting.kind == "choice" and raw not in setting.choices:
            self._problems.append(f"{setting.name}={raw!r} must be one of {', '.join(setting.choices)}")
        if setting.kind == "file" and raw and not os.path.isfile(raw):
            self._problems.append(f"{setting.name}={raw} is not a file")
        return raw

    def _number(self, setting: Setting, raw: str) -> int | float:
        parse = int if setting.kind == "int" else float
        default = parse(setting.default or 0)
        try:
            value = parse(raw)
        except ValueError:
            self._problems.append(f"{setting.name}={raw!r} is not a number")
            return default
        if not setting.low <= value <= setting.high:  # type: ignore[operator]
            self._problems.append(f"{setting.name}={raw} is outside [{setting.low:g}, {setting.high:g}]")
        return value

    def problem(self, message: str) -> None:
        """Record a problem found by a cross-field check."""
        self._problems.append(message)

    def done(self) -> None:
        """Raise ConfigError naming every problem found, if any."""
        if self._problems:
            raise ConfigError("invalid configuration: " + "; ".join(self._problems))


#: The services behind the gateway: their gRPC APIs take only calls that carry the service token.
INTERNAL_SERVICES = ("detector", "embedder", "matcher", "audit")
#: How a file of the service token's digest begins (the token alone never does: 64 hex digits).
SERVICE_TOKEN_DIGEST_PREFIX = "sha256:"


def read_token_digest(path: Path, env: EnvReader) -> str:
    """The service token's SHA-256 that ``path`` holds (``sha256:`` and 64 hex digits, as
    `candor secrets init` writes it); a problem, and "", for anything else, the token itself
    included."""
    text = path.read_text(errors="replace").strip()
    if re.fullmatch(f"{SERVICE_TOKEN_DIGEST_PREFIX}[0-9a-f]{{64}}", text):
        return text.removeprefix(SERVICE_TOKEN_DIGEST_PREFIX)
    env.problem(
        "CANDOR_SERVICE_TOKEN_SHA256_FILE must hold the service token's digest, sha256: and 64 hex digits "
        "(`candor secrets init` writes it as service-token.sha256), never the token itself: "
        "a service holding the token hands it to whoever takes the service over"
    )
    return ""


@dataclass(frozen=True)
class CommonSettings:
    """Settings every service shares."""

    service: str
    nats_url: str
    grpc_address: str
    max_message_bytes: int
    shutdown_grace_s: float
    request_timeout_s: float
    #: PEM certificate chain and key for serving gRPC over TLS; both empty means plaintext.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: NATS credentials file (JWT + nkey seed) and CA bundle for tls:// servers.
    nats_creds_file: str = ""
    nats_ca_file: str = ""
    #: NATS user and the file holding its password (one per service in deployments).
    nats_user: str = ""
    nats_password_file: str = field(default="", repr=False)
    #: host:port of a plaintext listener serving only gRPC health (for kubelet probes); "" for none.
    health_address: str = ""
    #: host:port of the Prometheus /metrics listener; "" for none.
    metrics_address: str = ""
    #: The SHA-256 of the token every call to an internal service's gRPC API must carry (the
    #: service keeps only this, so whoever takes it over finds no token that opens another's API);
    #: "" for the gateway, whose callers bring the users' own tokens.
    service_token_sha256: str = ""

    @classmethod
    def read(cls, service: str, env: EnvReader) -> CommonSettings:
        """Read the shared settings (catalogue.COMMON) and check how they fit together."""
        nats_url = env.get(catalogue.NATS_URL)
        nats_creds, nats_ca = env.get(catalogue.NATS_CREDS), env.get(catalogue.NATS_CA)
        nats_user, nats_password = env.get(catalogue.NATS_USER), env.get(catalogue.NATS_PASSWORD_FILE)
        if bool(nats_user) != bool(nats_password):
            env.problem("CANDOR_NATS_USER and CANDOR_NATS_PASSWORD_FILE go together")
        if nats_user and nats_creds:
            env.problem("CANDOR_NATS_USER and CANDOR_NATS_CREDS are alternatives; set one")
        nats_plaintext = env.get(catalogue.NATS_PLAINTEXT)
        # A cluster's servers may be listed, comma-separated; each is held to the same rules.
        for server in nats_servers(nats_url):
            if not server.startswith(("nats://", "tls://")):
                env.problem(f"CANDOR_NATS_URL must start with nats:// or tls:// (each server of a list): {server}")
                continue
            nats_host = urlsplit(server).hostname or ""
            if server.startswith("nats://") and nats_host and not is_loopback(nats_host) and nats_plaintext != "allow":
                # Photos, chips and audit events cross this connection.
                env.problem(
                    f"CANDOR_NATS_URL={server} is plaintext to a network address; use tls:// with CANDOR_NATS_CA, "
                    "or CANDOR_NATS_PLAINTEXT=allow behind a mesh that encrypts"
                )
        address = env.get(catalogue.GRPC_ADDRESS)
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            env.problem(f"CANDOR_GRPC_ADDRESS={address!r} is not host:port")
        cert, key = env.get(catalogue.GRPC_TLS_CERT), env.get(catalogue.GRPC_TLS_KEY)
        if bool(cert) != bool(key):
            env.problem("CANDOR_GRPC_TLS_CERT and CANDOR_GRPC_TLS_KEY go together")
        plaintext_ok = env.get(catalogue.GRPC_PLAINTEXT)
        if host and not cert and plaintext_ok != "allow" and not is_loopback(host):
            # Bearer tokens and probe photos must not cross a network in the clear by accident.
            env.problem(
                f"CANDOR_GRPC_ADDRESS={address} is not a loopback address and no TLS certificate is set; "
                "set CANDOR_GRPC_TLS_CERT/_KEY, or CANDOR_GRPC_PLAINTEXT=allow behind a mesh that encrypts"
            )
        health_address = env.get(catalogue.HEALTH_ADDRESS)
        if health_address and not health_address.rpartition(":")[2].isdigit():
            env.problem(f"CANDOR_HEALTH_ADDRESS={health_address!r} is not host:port")
        metrics_address = read_metrics_address(env)
        service_token_sha256 = ""
        if service in INTERNAL_SERVICES:
            digest_file = env.get(catalogue.SERVICE_TOKEN_SHA256_FILE)
            if digest_file and os.path.isfile(digest_file):
                service_token_sha256 = read_token_digest(Path(digest_file), env)
        return cls(
            service=service,
            service_token_sha256=service_token_sha256,
            health_address=health_address,
            metrics_address=metrics_address,
            nats_url=nats_url,
            grpc_address=address,
            max_message_bytes=env.get(catalogue.MAX_MESSAGE_BYTES),
            shutdown_grace_s=env.get(catalogue.SHUTDOWN_GRACE_S),
            request_timeout_s=env.get(catalogue.REQUEST_TIMEOUT_S),
            tls_cert_file=cert,
            tls_key_file=key,
            nats_creds_file=nats_creds,
            nats_ca_file=nats_ca,
            nats_user=nats_user,
            nats_password_file=nats_password,
        )


def nats_servers(url: str) -> list[str]:
    """The servers of CANDOR_NATS_URL: one URL, or a cluster's, comma-separated."""
    return [server.strip() for server in url.split(",") if server.strip()]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, bracketed or not) is this machine's loopback."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_metrics_address(env: EnvReader) -> str:
    """CANDOR_METRICS_ADDRESS, checked to be host:port; empty when no metrics are served."""
    address: str = env.get(catalogue.METRICS_ADDRESS)
    if address and not address.rpartition(":")[2].isdigit():
        env.problem(f"CANDOR_METRICS_ADDRESS={address!r} is not host:port")
    return address

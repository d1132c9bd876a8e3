"""Configuration from environment variables only, checked before a service starts."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from candor_kit.errors import ConfigError

T = TypeVar("T")

#: The largest message a service accepts or sends, gRPC and NATS alike (a 10 MB photo plus room).
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class EnvReader:
    """Reads typed values from an environment mapping and names every bad one at once."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = os.environ if environ is None else environ
        self._problems: list[str] = []

    def text(self, name: str, default: str | None = None) -> str:
        """A string value; with no default a missing value is a problem."""
        value = self._environ.get(name, "").strip()
        if value:
            return value
        if default is None:
            self._problems.append(f"{name} is required")
            return ""
        return default

    def number(self, name: str, default: T, parse: Callable[[str], T], low: T, high: T) -> T:
        """A number within [low, high]."""
        raw = self._environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = parse(raw)
        except ValueError:
            self._problems.append(f"{name}={raw!r} is not a number")
            return default
        if not low <= value <= high:  # type: ignore[operator]
            self._problems.append(f"{name}={raw} is outside [{low}, {high}]")
        return value

    def items(self, name: str, default: str | None = None) -> tuple[str, ...]:
        """A comma-separated list of non-empty values."""
        return tuple(v.strip() for v in self.text(name, default).split(",") if v.strip())

    def problem(self, message: str) -> None:
        """Record a problem found by a cross-field check."""
        self._problems.append(message)

    def done(self) -> None:
        """Raise ConfigError naming every problem found, if any."""
        if self._problems:
            raise ConfigError("invalid configuration: " + "; ".join(self._problems))


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

    @classmethod
    def read(cls, service: str, env: EnvReader) -> CommonSettings:
        """Read CANDOR_NATS_URL, CANDOR_GRPC_ADDRESS and the shared limits."""
        nats_url = env.text("CANDOR_NATS_URL")
        if nats_url and not nats_url.startswith(("nats://", "tls://")):
            env.problem("CANDOR_NATS_URL must start with nats:// or tls://")
        nats_creds, nats_ca = env.text("CANDOR_NATS_CREDS", ""), env.text("CANDOR_NATS_CA", "")
        for name, path in (("CANDOR_NATS_CREDS", nats_creds), ("CANDOR_NATS_CA", nats_ca)):
            if path and not os.path.isfile(path):
                env.problem(f"{name}={path} is not a file")
        nats_host = urlsplit(nats_url).hostname or ""
        nats_plaintext = env.text("CANDOR_NATS_PLAINTEXT", "loopback")
        if nats_plaintext not in ("loopback", "allow"):
            env.problem("CANDOR_NATS_PLAINTEXT must be loopback or allow")
        if nats_url.startswith("nats://") and nats_host and not _is_loopback(nats_host) and nats_plaintext != "allow":
            # Photos, chips and audit events cross this connection.
            env.problem(
                f"CANDOR_NATS_URL={nats_url} is plaintext to a network address; use tls:// with CANDOR_NATS_CA, "
                "or CANDOR_NATS_PLAINTEXT=allow behind a mesh that encrypts"
            )
        address = env.text("CANDOR_GRPC_ADDRESS", "127.0.0.1:0")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            env.problem(f"CANDOR_GRPC_ADDRESS={address!r} is not host:port")
        cert, key = env.text("CANDOR_GRPC_TLS_CERT", ""), env.text("CANDOR_GRPC_TLS_KEY", "")
        if bool(cert) != bool(key):
            env.problem("CANDOR_GRPC_TLS_CERT and CANDOR_GRPC_TLS_KEY go together")
        for name, path in (("CANDOR_GRPC_TLS_CERT", cert), ("CANDOR_GRPC_TLS_KEY", key)):
            if path and not os.path.isfile(path):
                env.problem(f"{name}={path} is not a file")
        plaintext_ok = env.text("CANDOR_GRPC_PLAINTEXT", "loopback")
        if plaintext_ok not in ("loopback", "allow"):
            env.problem("CANDOR_GRPC_PLAINTEXT must be loopback or allow")
        if host and not cert and plaintext_ok != "allow" and not _is_loopback(host):
            # Bearer tokens and probe photos must not cross a network in the clear by accident.
            env.problem(
                f"CANDOR_GRPC_ADDRESS={address} is not a loopback address and no TLS certificate is set; "
                "set CANDOR_GRPC_TLS_CERT/_KEY, or CANDOR_GRPC_PLAINTEXT=allow behind a mesh that encrypts"
            )
        return cls(
            service=service,
            nats_url=nats_url,
            grpc_address=address,
            max_message_bytes=env.number("CANDOR_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, int, 1 << 20, 64 << 20),
            shutdown_grace_s=env.number("CANDOR_SHUTDOWN_GRACE_S", 5.0, float, 0.0, 120.0),
            request_timeout_s=env.number("CANDOR_REQUEST_TIMEOUT_S", 30.0, float, 0.1, 600.0),
            tls_cert_file=cert,
            tls_key_file=key,
            nats_creds_file=nats_creds,
            nats_ca_file=nats_ca,
        )


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""``candor secrets init DIR``: the secrets a deployment needs, generated locally and never committed.

One folder feeds docker-compose (file secrets and an env file), Kubernetes (``kubectl create secret
--from-file``, see deploy/README.md) and the local process stack in compose mode:

- ``nats-password-<service>``: each service's NATS password (CANDOR_NATS_PASSWORD_FILE);
- ``nats.env``: the same passwords as NATS_PASSWORD_<SERVICE>=..., for the nats-server;
- ``token-signing.pem``: the Ed25519 key that signs bearer tokens (``candor token issue --key``);
  it stays with whoever issues tokens, never on the cluster. Production tokens usually come
  from the agency's identity provider instead;
- ``token-keys.pem``: its public key, which the gateway trusts (CANDOR_GATEWAY_JWT_KEYS_FILE);
- ``postgres-password`` and ``audit-postgres-dsn``: the compose PostgreSQL's password, and the
  connection string the audit service uses with it (CANDOR_AUDIT_POSTGRES_DSN_FILE);
- ``audit-signing-key.pem``: the Ed25519 key that signs the audit chain (CANDOR_AUDIT_SIGNING_KEY_FILE).
  Keep a copy offline: without it the chain can still be verified (with its public key), but not
  continued under the same key.
- ``service-token``: the bearer token every call to an internal service's gRPC API (detector,
  embedder, matcher, audit) must carry; it stays with the operators who call those APIs, never
  on a service;
- ``service-token.sha256``: its digest, all the internal services are given
  (CANDOR_SERVICE_TOKEN_SHA256_FILE): whoever takes one over finds no token to call another with;
- ``photo-key``: the AES-256 key (base64) that encrypts the stored gallery photos and retained
  probes (CANDOR_GATEWAY_PHOTO_KEY_FILE); without it they cannot be read. Keep a copy offline.
- ``review-session-key``: the AES-256 key (base64) that seals the review desk's session cookies
  (CANDOR_REVIEW_SESSION_KEY_FILE); replacing it signs everyone out.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from candor_kit.aes_keys import generate_aes_key
from candor_kit.grpc_server import service_token_sha256
from candor_kit.keys import generate_signing_key, generate_token_keys
from candor_kit.settings import SERVICE_TOKEN_DIGEST_PREFIX
from candor_kit.subjects import ROLES


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Create or replace ``path`` with ``text``, readable only as ``mode`` allows."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


def nats_password() -> str:
    """192 random bits that nats-server reads back as a string.

    nats-server parses an environment variable's value as a config value, so a password like
    ``7u...`` fails as a malformed number; a letter prefix and hex digits always parse as a string.
    """
    return "pw" + secrets.token_hex(24)


def service_token() -> str:
    """256 random bits as 64 hex digits: the token internal gRPC APIs require."""
    return secrets.token_hex(32)


def write_service_token(token_path: Path, digest_path: Path) -> None:
    """A new service token at ``token_path`` (0600) and its digest, as the internal services read
    it (``sha256:<hex>``), at ``digest_path``."""
    token = service_token()
    write_private(token_path, token + "\n")
    write_private(digest_path, f"{SERVICE_TOKEN_DIGEST_PREFIX}{service_token_sha256(token)}\n", 0o644)


def write_token_keys(private_path: Path, public_path: Path) -> None:
    """A new token-signing key pair: the private key 0600, the public key beside it."""
    private, public = generate_token_keys()
    write_private(private_path, private.decode("ascii"))
    write_private(public_path, public.decode("ascii"), 0o644)


def init_secrets(folder: Path, *, force: bool = False) -> list[Path]:
    """Write every secret into ``folder`` (mode 0700); refuses to overwrite unless ``force``.

    The files are 0644 inside the 0700 folder: compose bind-mounts file secrets with the host's
    permissions, and the services run as uid 10001, not as the folder's owner.
    """
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    if any(folder.iterdir()) and not force:
        raise FileExistsError(f"{folder} already holds secrets; pass --force to replace them")
    passwords = {service: nats_password() for service in ROLES}
    written = []
    for service, password in passwords.items():
        path = folder / f"nats-password-{service}"
        write_private(path, password + "\n", 0o644)
        written.append(path)
    env = "".join(f"NATS_PASSWORD_{service.upper()}={password}\n" for service, password in passwords.items())
    write_private(folder / "nats.env", env)
    write_token_keys(folder / "token-signing.pem", folder / "token-keys.pem")
    database_password = secrets.token_hex(24)
    write_private(folder / "postgres-password", database_password + "\n", 0o644)
    write_private(folder / "audit-postgres-dsn", compose_audit_dsn(database_password) + "\n", 0o644)
    write_private(folder / "audit-signing-key.pem", generate_signing_key().decode("ascii"), 0o644)
    write_private(folder / "photo-key", generate_aes_key().decode("ascii"), 0o644)
    write_private(folder / "review-session-key", generate_aes_key().decode("ascii"), 0o644)
    write_service_token(folder / "service-token", folder / "service-token.sha256")
    return [
        *written,
        *(folder / name for name in ("nats.env", "token-signing.pem", "token-keys.pem")),
        *(
            folder / name
            for name in (
                "postgres-password",
                "audit-postgres-dsn",
                "audit-signing-key.pem",
                "photo-key",
                "review-session-key",
                "service-token",
                "service-token.sha256",
            )
        ),
    ]


def compose_audit_dsn(password: str) -> str:
    """The audit service's connection string to the compose stack's PostgreSQL."""
    return f"host=postgres port=5432 dbname=candor_audit user=candor_audit password={password} sslmode=disable"

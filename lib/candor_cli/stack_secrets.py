"""The local stack's secrets, made on first use under DATA/secrets (0600), named as
`candor secrets init` names a deployment's: the service token, the token-signing key, the AES keys
and each NATS user's password."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from candor_cli.deploy_secrets import nats_password, write_private, write_service_token, write_token_keys
from candor_kit import subjects
from candor_kit.aes_keys import generate_aes_key
from candor_kit.keys import generate_signing_key


def made_once(path: Path, make: Callable[[], str]) -> Path:
    """``path``, written (0600, its folder 0700) with what ``make`` returns the first time only."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, make())
    return path


def ensure_service_token_digest(data_dir: Path) -> Path:
    """The digest of the token the internal services' gRPC APIs require, which the services are
    given (the token, for callers, beside it in ``service-token``; both made on first use); its
    path."""
    secrets = data_dir / "secrets"
    digest = secrets / "service-token.sha256"
    if not digest.exists():
        secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_service_token(secrets / "service-token", digest)
    return digest


def ensure_token_keys(data_dir: Path) -> Path:
    """The local stack's token-signing key (made on first use); returns the private key's path."""
    secrets = data_dir / "secrets"
    private = secrets / "token-signing.pem"
    if not private.exists():
        secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_token_keys(private, secrets / "token-keys.pem")
    return private


def ensure_aes_key(data_dir: Path, name: str) -> Path:
    """One of the local stack's AES-256 keys (made on first use), named as ``candor secrets init``
    names it: ``photo-key`` (the photo store) or ``review-session-key`` (the review desk's cookies)."""
    return made_once(data_dir / "secrets" / name, lambda: generate_aes_key().decode("ascii"))


def ensure_nats_passwords(data_dir: Path) -> dict[str, str]:
    """Each NATS user's password (every role of ``subjects.ROLES``), made on first use in
    ``data_dir/secrets/nats-password-<role>`` (0600), as ``candor secrets init`` names them."""
    return {
        role: made_once(nats_password_file(data_dir, role), lambda: nats_password() + "\n").read_text().strip()
        for role in subjects.ROLES
    }


def nats_password_file(data_dir: Path, role: str) -> Path:
    """Where the local stack keeps ``role``'s NATS password."""
    return data_dir / "secrets" / f"nats-password-{role}"


def ensure_audit_signing_key(data_dir: Path) -> Path:
    """The audit service's Ed25519 signing key (made on first use); its path."""
    return made_once(data_dir / "secrets" / "audit-signing-key.pem", lambda: generate_signing_key().decode("ascii"))

"""Ed25519 keys as PEM: the audit chain's signing key and the token-signing pair are both made
here, so the command line (which creates a deployment's secrets) needs no service package."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def generate_signing_key() -> bytes:
    """A new Ed25519 private key, PEM (PKCS #8): the audit chain's signing key."""
    return _private_pem(Ed25519PrivateKey.generate())


def generate_token_keys() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair for signing tokens, as (private PEM, public PEM)."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _private_pem(key), public


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

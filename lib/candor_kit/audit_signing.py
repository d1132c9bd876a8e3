"""Ed25519 signatures on audit records and checkpoints.

The hash chain alone shows that a record was changed, removed or reordered, but someone who can
write the database could truncate the tail and append a fresh, self-consistent chain. Signing each
record's hash with a key only the audit service holds stops that; a checkpoint (the head's
sequence and hash, signed and published) that an outside party keeps stops even an insider who
holds the key from rewriting what came before it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from candor_kit.errors import ConfigError


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: the first 16 hex digits of its SHA-256."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def record_message(sequence: int, record_hash: str) -> bytes:
    """What a record's signature covers."""
    return f"candor-audit-record:{sequence}:{record_hash}".encode("ascii")


def checkpoint_message(sequence: int, head_hash: str, made_at: str) -> bytes:
    """What a checkpoint's signature covers."""
    return f"candor-audit-checkpoint:{sequence}:{head_hash}:{made_at}".encode("ascii")


def case_records_sha256(records: Iterable[tuple[int, str]]) -> str:
    """The digest of a case's records, (sequence, record hash) in chain order, that its manifest signs."""
    digest = hashlib.sha256()
    for sequence, record_hash in records:
        digest.update(f"{sequence}:{record_hash}\n".encode("ascii"))
    return digest.hexdigest()


def case_manifest_message(
    case_number: str, through_sequence: int, sequences: Sequence[int], records_sha256: str, made_at: str
) -> bytes:
    """What a case manifest's signature covers (JSON, so no case number can be read two ways)."""
    body = json.dumps([case_number, through_sequence, list(sequences), records_sha256, made_at], separators=(",", ":"))
    return b"candor-audit-case-manifest:" + body.encode("utf-8")


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that record ``sequence`` of the chain had hash ``head_hash``."""

    sequence: int
    head_hash: str
    made_at: str
    key_id: str
    signature: str


class Signer:
    """Signs with the audit service's private key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        """Load a PEM (PKCS #8) Ed25519 private key; refuses anything else."""
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"audit signing key {path} is unreadable: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"audit signing key {path} is not an Ed25519 key")
        return cls(key)

    def sign(self, message: bytes) -> str:
        """The base64 signature of ``message``."""
        return base64.b64encode(self._key.sign(message)).decode("ascii")

    def public_pem(self) -> str:
        """The public key, PEM: what an outside party pins to check signatures."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")


def verify_signature(keys: Mapping[str, Ed25519PublicKey], signer: str, signature: str, message: bytes) -> bool:
    """Whether ``signature`` is a valid signature of ``message`` by the known key ``signer``."""
    key = keys.get(signer)
    if key is None or not signature:
        return False
    try:
        key.verify(base64.b64decode(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def load_public_key(pem: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM."""
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key

"""AES-256 keys kept in secret files as base64 text: the photo store's key and the review desk's
session key (``candor secrets init`` and the local stack make them)."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from candor_kit.errors import ConfigError


def generate_aes_key() -> bytes:
    """A new AES-256 key, as the base64 text its secret file holds."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)) + b"\n"


def read_aes_key(path: Path, what: str) -> bytes:
    """The 32-byte key in a secret file; ConfigError naming ``what`` when it is missing or malformed."""
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (OSError, ValueError, binascii.Error) as exc:
        raise ConfigError(f"{what} {path}: {exc}") from exc
    if len(key) != 32:
        raise ConfigError(f"{what} {path}: must be 32 bytes of base64 (`candor secrets init` makes one)")
    return key

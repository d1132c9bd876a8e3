"""Probe retention: probe photos kept only when the policy says so, encrypted at rest, deleted
(and the deletion audited) when their retention ends.

Each probe is one file ``<search_id>.probe``: a JSON header line (search id, when it was stored,
the photo's SHA-256), then a 12-byte nonce and the AES-256-GCM ciphertext of the photo, with the
header as associated data, so neither the photo nor its header can be altered unnoticed. The key
is 32 random bytes, base64, in a secret file (``candor secrets init`` makes one).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from candor_kit import AuditPublisher
from candor_kit.errors import ConfigError, PreconditionFailed

NONCE_BYTES = 12
SEARCH_ID = re.compile(r"^[0-9a-f-]{36}$")
log = structlog.get_logger("candor.gateway.retention")


def generate_probe_key() -> bytes:
    """A new probe-encryption key, as the base64 text its secret file holds."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)) + b"\n"


def read_probe_key(path: Path) -> bytes:
    """The 32-byte key from its secret file; ConfigError when it is missing or malformed."""
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (OSError, ValueError, binascii.Error) as exc:
        raise ConfigError(f"probe key {path}: {exc}") from exc
    if len(key) != 32:
        raise ConfigError(f"probe key {path}: must be 32 bytes of base64 (`candor secrets init` makes one)")
    return key


@dataclass(frozen=True)
class StoredProbe:
    """The header of one retained probe."""

    search_id: str
    stored_at: dt.datetime
    sha256: str
    path: Path


class ProbeStore:
    """Encrypted probe photos in one folder (shared by every gateway replica)."""

    def __init__(self, folder: Path, key: bytes) -> None:
        self._folder = folder
        self._aead = AESGCM(key)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, search_id: str) -> Path:
        if not SEARCH_ID.match(search_id):
            raise ValueError(f"not a search id: {search_id!r}")
        return self._folder / f"{search_id}.probe"

    def save(self, search_id: str, image: bytes, sha256: str) -> None:
        """Encrypt and store a probe; written to a temporary file first, then renamed."""
        stored_at = dt.datetime.now(dt.UTC).isoformat()
        header = json.dumps({"search_id": search_id, "stored_at": stored_at, "sha256": sha256}).encode() + b"\n"
        nonce = os.urandom(NONCE_BYTES)
        path = self._path(search_id)
        partial = path.with_suffix(".partial")
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            out.write(header + nonce + self._aead.encrypt(nonce, image, header))
            out.flush()
            os.fsync(out.fileno())
        partial.replace(path)

    def load(self, search_id: str) -> bytes | None:
        """The decrypted probe, or None when none is kept; PreconditionFailed when the file
        was altered or another key made it."""
        try:
            data = self._path(search_id).read_bytes()
        except FileNotFoundError:
            return None
        header, _, rest = data.partition(b"\n")
        header += b"\n"
        try:
            return self._aead.decrypt(rest[:NONCE_BYTES], rest[NONCE_BYTES:], header)
        except InvalidTag as exc:
            raise PreconditionFailed(
                f"the retained probe of search {search_id} fails its integrity check (altered, or another key)"
            ) from exc

    def stored(self) -> Iterator[StoredProbe]:
        """Every retained probe's header."""
        for path in sorted(self._folder.glob("*.probe")):
            try:
                with path.open("rb") as data:
                    header = json.loads(data.readline())
                stored_at = dt.datetime.fromisoformat(header["stored_at"])
                yield StoredProbe(header["search_id"], stored_at, header["sha256"], path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # One unreadable file must not stop the sweep of the others; it is left for a person.
                log.warning("probe_unreadable", file=path.name, error=type(exc).__name__)

    def expired(self, keep_days: int, now: dt.datetime | None = None) -> list[StoredProbe]:
        """The probes stored more than ``keep_days`` ago (all of them when the policy keeps none)."""
        limit = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=keep_days)
        return [probe for probe in self.stored() if probe.stored_at <= limit]

    def discard(self, search_id: str) -> None:
        """Remove a probe whose search was never recorded (nothing to audit: it was never kept)."""
        self._path(search_id).unlink(missing_ok=True)

    @staticmethod
    def delete(probe: StoredProbe) -> bool:
        """Remove a probe's file; False when another replica removed it first."""
        try:
            probe.path.unlink()
        except FileNotFoundError:
            return False
        return True


async def sweep(store: ProbeStore, keep_days: int, audit: AuditPublisher) -> int:
    """Delete the probes whose retention has ended, each deletion audited first (with an id
    derived from the search, so two replicas sweeping at once record it once). Returns how many."""
    deleted = 0
    for probe in await asyncio.to_thread(store.expired, keep_days):
        await audit.publish(
            "probe.deleted",
            event_id=f"{probe.search_id}/probe.deleted",
            actor="system",
            details={
                "search_id": probe.search_id,
                "probe_sha256": probe.sha256,
                "stored_at": probe.stored_at.isoformat(),
                "reason": f"retention of {keep_days} days ended",
            },
        )
        deleted += await asyncio.to_thread(store.delete, probe)
    if deleted:
        log.info("probes_deleted", count=deleted, keep_days=keep_days)
    return deleted

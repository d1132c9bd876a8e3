"""Tokens revoked by their users' sign-out, shared by every gateway replica.

A token is kept here by its SHA-256 (never the token itself) until it would have expired anyway,
so the register stays small. Every call's token is looked up: a sign-out on one replica holds on
all of them at once, and a session cookie replayed after sign-out gets nowhere.
"""

from __future__ import annotations

import hashlib

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from candor_kit import Bus
from candor_kit.jetstream_setup import open_bucket
from candor_kit.kv_entries import reach
from candor_kit.subjects import REVOKED_TOKENS_BUCKET


def token_key(token: str) -> str:
    """A token's key in the register."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def sign_out_event_id(token: str) -> str:
    """The one audit event id of a token's sign-out: however often it is sent, the chain holds it once.
    Half the token's key (never the token): 128 bits tell sessions apart without a lookup to the register."""
    return f"session-ended/{token_key(token)[:32]}"


class TokenRevocations:
    """The register of revoked tokens (REVOKED_TOKENS_BUCKET)."""

    def __init__(self, bus: Bus, keep_s: int, replicas: int = 1) -> None:
        self._bus = bus
        self._keep_s = keep_s
        self._replicas = replicas
        self._bucket: KeyValue | None = None
        #: Revocations seen here: a revoked token never comes back, so it is never asked for twice.
        self._seen: set[str] = set()

    async def open(self) -> None:
        """Create the register when missing."""
        self._bucket = await open_bucket(self._bus, REVOKED_TOKENS_BUCKET, self._replicas, ttl=float(self._keep_s))

    @property
    def bucket(self) -> KeyValue:
        """The register's bucket."""
        if self._bucket is None:
            raise RuntimeError("TokenRevocations.open() was not awaited")
        return self._bucket

    async def revoke(self, token: str) -> None:
        """Revoke a token on every replica (tried again while the register's stream does not
        answer: a put stored twice is the same revocation)."""
        key = token_key(token)
        await reach(lambda: self.bucket.put(key, b"revoked"), "the sign-out could not be recorded")
        self._seen.add(key)

    async def revoked(self, token: str) -> bool:
        """Whether a token was revoked. The register is read again while its stream does not answer
        (every call checks its token here: an election must not refuse every call); UNAVAILABLE
        when it still cannot be read (fail closed)."""
        key = token_key(token)
        if key in self._seen:
            return True
        try:
            await reach(lambda: self.bucket.get(key), "revoked tokens cannot be checked")
        except KeyNotFoundError:
            return False
        self._seen.add(key)
        return True

"""Sessions in sealed cookies, and the CSRF tokens that go with them.

A session (the user, their roles, their bearer token, a CSRF token, its expiry) is serialised and
sealed with AES-256-GCM under the app's session key, so every replica can open it and nobody
without the key can read or alter it; the token inside it never reaches the page. The cookie is
``__Host-`` prefixed, ``Secure``, ``HttpOnly`` and ``SameSite=Strict``. Every form carries the
session's CSRF token, checked in constant time on every POST.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SESSION_COOKIE = "__Host-candor-session"
#: The short-lived cookie of a sign-in under way: the login form's CSRF token, or the OpenID
#: Connect state, nonce and PKCE verifier. SameSite=Lax, so it survives the provider's redirect.
LOGIN_COOKIE = "__Host-candor-login"
NONCE_BYTES = 12


@dataclass(frozen=True)
class Session:
    """A signed-in user."""

    user: str
    roles: tuple[str, ...]
    token: str
    csrf: str
    #: Unix seconds.
    expires_at: int

    def has(self, *roles: str) -> bool:
        """Whether the user holds one of ``roles``."""
        return bool(set(roles) & set(self.roles))


def new_csrf() -> str:
    """A fresh CSRF token."""
    return secrets.token_urlsafe(32)


def same_token(expected: str, presented: object) -> bool:
    """Whether a form's CSRF token is the expected one (compared in constant time)."""
    return bool(expected) and isinstance(presented, str) and hmac.compare_digest(presented.encode(), expected.encode())


class Sealer:
    """Seals and opens cookie values with AES-256-GCM; the cookie's name is associated data, so a
    value cannot be moved from one cookie to another."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, name: str, value: dict[str, object]) -> str:
        """The sealed, URL-safe text of ``value``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, json.dumps(value).encode(), name.encode())
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, name: str, text: str | None) -> dict[str, object] | None:
        """The value sealed in ``text``, or None when it is missing, altered or from another key."""
        if not text or len(text) > 8192:
            return None
        try:
            sealed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            value = json.loads(self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], name.encode()))
        except (binascii.Error, ValueError, InvalidTag):
            return None
        return value if isinstance(value, dict) else None

    def seal_session(self, session: Session) -> str:
        """The session cookie's value."""
        return self.seal(SESSION_COOKIE, asdict(session))

    def open_session(self, text: str | None, now: float | None = None) -> Session | None:
        """The session in a cookie, or None when there is none or it has expired."""
        session = self.open_any_session(text)
        return session if session is not None and session.expires_at > (now or time.time()) else None

    def open_any_session(self, text: str | None) -> Session | None:
        """The session in a cookie, expired or not (to recognise this browser's own form after its
        session ended); None when there is none."""
        value = self.open(SESSION_COOKIE, text)
        if value is None:
            return None
        try:
            session = Session(
                user=str(value["user"]),
                roles=tuple(str(role) for role in value["roles"]),  # type: ignore[attr-defined]
                token=str(value["token"]),
                csrf=str(value["csrf"]),
                expires_at=int(value["expires_at"]),  # type: ignore[call-overload]
            )
        except (KeyError, TypeError, ValueError):
            return None
        return session

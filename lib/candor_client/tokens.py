"""Bearer tokens for the gateway: a person's token as given, or a service account's, fetched from
the identity provider with the OAuth 2.0 client-credentials flow and renewed before it expires.

Tokens are never logged. A token source is asked for a token on every call, so a long-running
integration never calls with an expired one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

__all__ = ["ClientCredentials", "StaticToken", "TokenError", "TokenSource", "bearer_metadata"]


class TokenError(Exception):
    """The identity provider gave no usable token (wrong client secret, provider down, ...)."""


class TokenSource(Protocol):
    """Anything that gives the current bearer token."""

    def token(self) -> str:
        """A token valid for at least the next call."""
        ...


@dataclass(frozen=True)
class StaticToken:
    """A token given once (a person's, from `candor token issue` or the desk's sign-in)."""

    value: str

    def token(self) -> str:
        """The token as given."""
        return self.value


@dataclass
class ClientCredentials:
    """A service account's tokens from the identity provider's token endpoint (RFC 6749 §4.4),
    the client authenticating with its secret (HTTP Basic), kept until ``renew_before_s`` before
    they expire and then fetched again.

    ``client_secret_file`` holds the secret, so it is never on a command line or in the
    environment of every child process.
    """

    token_url: str
    client_id: str
    client_secret_file: Path
    scope: str = ""
    #: The gateway's audience, for providers that take one in the request (RFC 8707 ``resource``).
    audience: str = ""
    renew_before_s: float = 60.0
    timeout_s: float = 10.0
    #: An httpx client of the caller's (a proxy, a CA bundle); a plain one when None.
    http: httpx.Client | None = None
    _token: str = field(default="", init=False, repr=False)
    _expires_at: float = field(default=0.0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def token(self) -> str:
        """The current token, fetched when there is none or it expires within ``renew_before_s``."""
        with self._lock:
            if not self._token or time.monotonic() >= self._expires_at - self.renew_before_s:
                self._token, lifetime = self._fetch()
                self._expires_at = time.monotonic() + lifetime
            return self._token

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if self.audience:
            form["resource"] = self.audience
        secret = self.client_secret_file.read_text().strip()
        http = self.http or httpx.Client(timeout=self.timeout_s)
        try:
            reply = http.post(self.token_url, data=form, auth=(self.client_id, secret))
        except httpx.HTTPError as error:
            raise TokenError(f"the identity provider at {self.token_url} did not answer: {error}") from error
        finally:
            if self.http is None:
                http.close()
        if reply.status_code != 200:
            raise TokenError(
                f"the identity provider refused client {self.client_id!r} (HTTP {reply.status_code}): "
                "check the client id and secret, and that the client may use the client-credentials flow"
            )
        try:
            body = reply.json()
            token, lifetime = str(body["access_token"]), float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError) as error:
            raise TokenError("the identity provider's answer holds no access_token") from error
        return token, lifetime


def bearer_metadata(source: TokenSource) -> tuple[tuple[str, str]]:
    """The call metadata that carries the source's current token."""
    return (("authorization", f"Bearer {source.token()}"),)

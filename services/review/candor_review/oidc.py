"""Sign-in through the agency's OpenID Connect provider: the authorization code flow with PKCE.

The provider's endpoints come from its discovery document. The browser is sent to the
authorization endpoint with a random ``state`` and a PKCE challenge, both kept in the sealed
sign-in cookie; on its return the code is exchanged at the token endpoint (with the client secret
and the PKCE verifier), and the access token it yields is checked exactly as the gateway checks it
(signature by a trusted key, issuer, audience, expiry, roles) before a session is made from it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from urllib.parse import urlencode

import httpx

from candor_kit import Unauthenticated
from candor_review.settings import OidcSettings


class OidcClient:
    """The web app as an OpenID Connect client of one provider."""

    def __init__(self, settings: OidcSettings, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._http = http
        self._metadata: dict[str, str] | None = None

    async def _endpoints(self) -> dict[str, str]:
        """The provider's discovery document (fetched once), checked to name the same issuer."""
        if self._metadata is None:
            reply = await self._http.get(f"{self._settings.issuer}/.well-known/openid-configuration")
            reply.raise_for_status()
            metadata = reply.json()
            if str(metadata.get("issuer", "")).rstrip("/") != self._settings.issuer:
                raise Unauthenticated("the OpenID Connect provider names another issuer")
            self._metadata = {key: str(metadata[key]) for key in ("authorization_endpoint", "token_endpoint")}
        return self._metadata

    async def start(self) -> tuple[str, dict[str, object]]:
        """Where to send the browser, and what the sign-in cookie must remember meanwhile."""
        endpoints = await self._endpoints()
        state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self._settings.client_id,
                "redirect_uri": self._settings.redirect_uri,
                "scope": "openid",
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{endpoints['authorization_endpoint']}?{query}", {"state": state, "verifier": verifier}

    async def finish(self, code: str, state: str, remembered: dict[str, object] | None) -> str:
        """The access token for the code the provider returned; Unauthenticated when the state is
        not the one this browser was sent with, or the provider refuses the code."""
        if not remembered or not hmac.compare_digest(str(remembered.get("state", "")), state or ""):
            raise Unauthenticated("the sign-in's state does not match; start again")
        if not code:
            raise Unauthenticated("the provider returned no code")
        endpoints = await self._endpoints()
        reply = await self._http.post(
            endpoints["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self._settings.redirect_uri,
                "code_verifier": str(remembered["verifier"]),
            },
            auth=(self._settings.client_id, self._settings.client_secret),
        )
        if reply.status_code != 200:
            raise Unauthenticated(f"the provider refused the sign-in (HTTP {reply.status_code})")
        token = reply.json().get("access_token")
        if not isinstance(token, str) or not token:
            raise Unauthenticated("the provider returned no access token")
        return token

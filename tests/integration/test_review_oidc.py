"""Signing in to the review desk through OpenID Connect (authorization code with PKCE), against
the running gateway. No identity provider can run here: the provider is a STAND-IN, served by
httpx's MockTransport, that checks the client's secret and the PKCE verifier as a real one does
and issues access tokens signed by the key the gateway trusts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import warnings
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from candor_cli.stack import AUDIENCE, LOCAL_ISSUER
from candor_kit.tokens import TokenVerifier, issue_token, load_private_key, load_public_keys
from candor_review import ReviewSettings, create_app
from candor_review.session import SESSION_COOKIE
from candor_review.settings import OidcSettings
from tests.integration.conftest import TOKEN_KEY, TOKEN_PUBLIC_KEY, InProcessStack

pytestmark = pytest.mark.asyncio(loop_scope="session")

with warnings.catch_warnings():
    # Starlette would have its TestClient on httpx2; httpx, which the desk itself uses, still serves.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

IDP = "https://idp.test/realms/candor"
DESK = "https://desk.test"


class StandInProvider:
    """The provider's discovery document and token endpoint; ``authorize`` plays the user's
    sign-in at the provider, handing out a code bound to the PKCE challenge."""

    def __init__(self) -> None:
        self.codes: dict[str, tuple[str, str, list[str]]] = {}

    def authorize(self, url: str, user: str, roles: list[str]) -> tuple[str, str]:
        query = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
        assert url.startswith(f"{IDP}/authorize?") and query["code_challenge_method"] == "S256"
        assert query["client_id"] == "review-desk" and query["redirect_uri"] == f"{DESK}/oidc/callback"
        code = secrets.token_urlsafe(16)
        self.codes[code] = (query["code_challenge"], user, roles)
        return code, query["state"]

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(
                200,
                json={"issuer": IDP, "authorization_endpoint": f"{IDP}/authorize", "token_endpoint": f"{IDP}/token"},
            )
        assert request.url.path.endswith("/token") and request.method == "POST"
        expected = "Basic " + base64.b64encode(b"review-desk:s3cret").decode()
        if request.headers.get("authorization") != expected:
            return httpx.Response(401, json={"error": "invalid_client"})
        form = {key: values[0] for key, values in parse_qs(request.content.decode()).items()}
        challenge, user, roles = self.codes.pop(form.get("code", ""), ("", "", []))
        verifier = form.get("code_verifier", "").encode()
        if not user or base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).decode().rstrip("=") != challenge:
            return httpx.Response(400, json={"error": "invalid_grant"})
        token = issue_token(load_private_key(TOKEN_KEY), user, roles, 600, LOCAL_ISSUER, AUDIENCE)
        return httpx.Response(200, json={"access_token": token, "token_type": "Bearer", "expires_in": 600})


def desk_app(stack: InProcessStack, provider: StandInProvider) -> TestClient:
    settings = ReviewSettings(
        host="127.0.0.1",
        port=0,
        gateway=stack.addresses["gateway"],
        tokens=TokenVerifier(load_public_keys(TOKEN_PUBLIC_KEY.decode()), LOCAL_ISSUER, AUDIENCE),
        session_key=bytes(range(32)),
        oidc=OidcSettings(IDP, "review-desk", "s3cret", f"{DESK}/oidc/callback"),
    )
    http = httpx.AsyncClient(transport=httpx.MockTransport(provider.handle))
    return TestClient(create_app(settings, http), base_url=DESK)


async def test_a_reviewer_signs_in_through_the_provider_and_the_desk_calls_the_gateway_as_them(
    stack: InProcessStack,
) -> None:
    provider = StandInProvider()

    def sign_in() -> None:
        with desk_app(stack, provider) as client:
            started = client.get("/oidc/start", follow_redirects=False)
            assert started.status_code == 303
            code, state = provider.authorize(started.headers["location"], "olivia", ["reviewer"])
            landed = client.get(f"/oidc/callback?code={code}&state={state}")
            assert landed.status_code == 200 and "Signed in as olivia" in landed.text
            assert client.cookies.get(SESSION_COOKIE)
            queue = client.get("/")  # the gateway answers as olivia, a reviewer
            assert queue.status_code == 200 and "Searches waiting for you" in queue.text and "olivia" in queue.text

    await asyncio.to_thread(sign_in)


async def test_a_forged_state_a_replayed_code_or_a_token_without_a_desk_role_signs_nobody_in(
    stack: InProcessStack,
) -> None:
    provider = StandInProvider()

    def refused() -> None:
        with desk_app(stack, provider) as client:
            started = client.get("/oidc/start", follow_redirects=False)
            code, state = provider.authorize(started.headers["location"], "mallory", ["reviewer"])
            forged = client.get(f"/oidc/callback?code={code}&state=not-{state}")
            assert forged.status_code == 401 and "state does not match" in forged.text
            assert not client.cookies.get(SESSION_COOKIE)
            # The refusal ends that sign-in: even the right state is no longer accepted.
            assert client.get(f"/oidc/callback?code={code}&state={state}").status_code == 401
            # A code is good once: signed in with it, it cannot sign in again.
            started = client.get("/oidc/start", follow_redirects=False)
            code, state = provider.authorize(started.headers["location"], "mallory", ["reviewer"])
            assert client.get(f"/oidc/callback?code={code}&state={state}").status_code == 200
            client.cookies.clear()
            started = client.get("/oidc/start", follow_redirects=False)
            _, state = provider.authorize(started.headers["location"], "mallory", ["reviewer"])
            replayed = client.get(f"/oidc/callback?code={code}&state={state}")
            assert replayed.status_code == 401 and "refused the sign-in" in replayed.text
            # An investigator's token is genuine but opens no desk.
            started = client.get("/oidc/start", follow_redirects=False)
            code, state = provider.authorize(started.headers["location"], "ivan", ["investigator"])
            outsider = client.get(f"/oidc/callback?code={code}&state={state}")
            assert outsider.status_code == 403 and not client.cookies.get(SESSION_COOKIE)

    await asyncio.to_thread(refused)

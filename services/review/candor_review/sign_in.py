"""Signing in and out: a pasted token, or OpenID Connect's authorization code flow; signing out
revokes the token at the gateway."""

from __future__ import annotations

import grpc
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from candor_kit import Unauthenticated
from candor_review.desk import (
    BEARER_PREFIX,
    Desk,
    Refused,
    log,
)
from candor_review.session import LOGIN_COOKIE, SESSION_COOKIE


class SignIn:
    """The sign-in and sign-out pages."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    def routes(self) -> list[Route]:
        """This part's pages and forms."""
        return [
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/oidc/start", self.oidc_start),
            Route("/oidc/callback", self.oidc_callback),
        ]

    async def login_page(self, request: Request) -> Response:
        """The sign-in page (the queue for someone signed in)."""
        if request.scope.get("candor.session") is not None:
            return RedirectResponse("/", status_code=303)
        said = "You are signed out." if request.query_params.get("signed_out") else ""
        return self.desk.login_form(request, said=said)

    async def login(self, request: Request) -> Response:
        """Signs in with a pasted token; back to a kept draft, if any."""
        form = await self.desk.checked_form(request, None)
        token = BEARER_PREFIX.sub("", str(form.get("token") or "").strip())
        if not token:
            return self.desk.login_form(request, 400, "paste the token your identity provider issued")
        try:
            session = self.desk.start_session(token)
        except Refused as refused:
            return self.desk.login_form(request, refused.status, refused.reason)
        response = RedirectResponse(self.desk.drafts.resume_url(request, session.user) or "/", status_code=303)
        self.desk.set_session(response, session)
        return response

    async def logout(self, request: Request) -> Response:
        """Signs out here and revokes the token at the gateway."""
        session = request.scope.get("candor.session")
        response: Response = RedirectResponse("/login?signed_out=1", status_code=303)
        if session is not None:
            await self.desk.checked_form(request, session)
            try:
                # The token is revoked at the gateway, so the cookie is dead on the server side
                # too: replayed from anywhere, it records nothing.
                await self.desk.gateway_for(session).end_session()
                log.info("signed_out", user=session.user)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAUTHENTICATED:  # else it was dead already
                    log.error("sign_out_not_recorded", user=session.user, code=error.code().name)
                    reason = (
                        "you are signed out in this browser, but the gateway could not revoke your sign-in "
                        f"({error.details()}); sign in and out again, or ask an administrator to revoke it"
                    )
                    response = self.desk.error_page(request, 502, reason)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    async def oidc_start(self, request: Request) -> Response:
        """Sends the browser to the identity provider."""
        oidc = self.desk.oidc
        if oidc is None:
            raise Refused(404, "sign-in through an identity provider is not configured")
        url, remembered = await oidc.start()
        response = RedirectResponse(url, status_code=303)
        # Lax, so the browser sends it back on the provider's redirect to /oidc/callback.
        self.desk.remember_sign_in(response, remembered, "lax")
        return response

    async def oidc_callback(self, request: Request) -> Response:
        """Signs in with the identity provider's answer."""
        oidc = self.desk.oidc
        if oidc is None:
            raise Refused(404, "sign-in through an identity provider is not configured")
        remembered = self.desk.sealer.open(LOGIN_COOKIE, request.cookies.get(LOGIN_COOKIE))
        try:
            token = await oidc.finish(
                request.query_params.get("code", ""), request.query_params.get("state", ""), remembered
            )
        except Unauthenticated as exc:
            return self.desk.login_form(request, 401, f"sign-in refused: {exc.message}")
        session = self.desk.start_session(token)
        # A page, not a redirect: the Strict session cookie is then sent on a same-site navigation.
        response = self.desk.render(
            request,
            "signed_in.html",
            user=session.user,
            onward=self.desk.drafts.resume_url(request, session.user) or "/",
        )
        self.desk.set_session(response, session)
        return response

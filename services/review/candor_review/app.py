"""The reviewer web app: server-rendered pages over the gateway's API.

Reviewers work through the searches that wait for them, comparing the probe with each candidate's
enrolled photo side by side (face boxes drawn, zoomable to the faces), and record a decision with
notes; supervisors settle disputes; supervisors and auditors read a case's searches with their
whole review trail; auditors read the oversight report. Every call goes to the gateway with the
user's own token, so the gateway decides and audits each one (every photo view included); the app
refuses earlier what the user's roles cannot do, every form needs the session's CSRF token, and
every page carries a strict Content-Security-Policy: scripts and styles from the desk alone, none
inline, no outside asset; every page works without its script.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import grpc
import httpx
import structlog
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from candor_kit import metrics
from candor_review.desk import (
    CONTENT_SECURITY_POLICY,
    COUNTED_METHODS,
    HERE,
    HTTP_STATUS,
    Desk,
    Refused,
    SignInFirst,
)
from candor_review.examination import Examination
from candor_review.oversight import Oversight
from candor_review.session import SESSION_COOKIE
from candor_review.settings import ReviewSettings
from candor_review.sign_in import SignIn

log = structlog.get_logger("candor.review")
tracer = trace.get_tracer("candor.review")


def create_app(settings: ReviewSettings, http: httpx.AsyncClient | None = None) -> Starlette:
    """The web app, talking to the gateway (and the OpenID Connect provider, when configured)."""
    desk = Desk(settings, http)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def no_icon(_: Request) -> Response:
        return Response(status_code=204)

    # --- errors and headers --------------------------------------------------------------------

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        return desk.error_page(request, exc.status, exc.reason)

    async def sign_in_first(request: Request, _: Exception) -> Response:
        if request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        return desk.error_page(request, 401, "sign in first")

    async def gateway_refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, grpc.aio.AioRpcError)
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            # The token expired or was revoked: the session goes with it.
            response = desk.login_form(request, 401, f"signed out: {exc.details()}")
            response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
            return response
        status = HTTP_STATUS.get(exc.code(), 502)
        return desk.error_page(request, status, exc.details() or "the gateway failed on this request; try again")

    async def no_such_page(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return desk.error_page(request, 404, "there is no such page on the review desk; check the address")
        if exc.status_code == 405:
            return desk.error_page(request, 405, "this page is opened with a link or a form, not that kind of request")
        return desk.error_page(request, exc.status_code, str(exc.detail))

    async def around(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        request.scope["candor.session"] = desk.sealer.open_session(request.cookies.get(SESSION_COOKIE))
        # Named by the method until the route is known: a path holds search ids and case numbers.
        with tracer.start_as_current_span(f"{request.method}", kind=trace.SpanKind.SERVER) as span:
            try:
                response = await call_next(request)
            except Exception:
                route = getattr(request.scope.get("route"), "path", None)
                log.exception("request_failed", method=request.method, path=route or "unmatched")
                response = desk.error_page(request, 500, "the desk failed on this request; try again")
            span.update_name(f"{request.method} {getattr(request.scope.get('route'), 'path', None) or 'unmatched'}")
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
        response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        if settings.https:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        session = request.scope.get("candor.session")
        template = getattr(request.scope.get("route"), "path", None)
        seconds = time.perf_counter() - started
        # Metrics take the route's template, never the path itself: a path holds search ids, and
        # an unmatched one is whatever a client sent.
        method = request.method if request.method in COUNTED_METHODS else "other"
        metrics.HTTP_HANDLED.labels(template or "unmatched", method, str(response.status_code)).inc()
        metrics.HTTP_SECONDS.labels(template or "unmatched").observe(seconds)
        log.info(
            "request",
            method=request.method,
            path=template or request.url.path,
            status=response.status_code,
            user=session.user if session else None,
            ms=round(seconds * 1000, 1),
        )
        return response

    routes = [
        Route("/healthz", healthz),
        Route("/favicon.ico", no_icon),
        *SignIn(desk).routes(),
        *Examination(desk).routes(),
        *Oversight(desk).routes(),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=around)],
        exception_handlers={
            Refused: refused,
            SignInFirst: sign_in_first,
            grpc.aio.AioRpcError: gateway_refused,
            HTTPException: no_such_page,
        },
        lifespan=desk.lifespan,
    )

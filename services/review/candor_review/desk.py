"""What every page of the review desk shares: the user's session (started from a token the gateway
would accept, sealed in a cookie), the checks on every posted form (size, origin, CSRF), the
gateway called with the user's own token, and the pages drawn from the templates."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import grpc
import httpx
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from candor_cli.report import utc
from candor_kit import Unauthenticated, conclusions
from candor_review.compare import MODES, OPACITIES, ZOOMS, Look, LookError
from candor_review.drafts import DRAFT_TTL_S, Drafts
from candor_review.gateway import Gateway, open_channel
from candor_review.oidc import OidcClient
from candor_review.queue import AGES, PAGE_SIZE
from candor_review.session import LOGIN_COOKIE, SESSION_COOKIE, Sealer, Session, new_csrf, same_token
from candor_review.settings import ReviewSettings
from candor_review.views import DECISION_WORDS, STATUS_WORDS, error_title

HERE = Path(__file__).resolve().parent
#: The roles this desk serves; anyone else is refused at sign-in.
DESK_ROLES = ("reviewer", "supervisor", "auditor")
#: Scripts and styles only from the desk itself (static/), never inline; images from the desk and
#: the data URIs it embeds.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; img-src 'self' data:; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
#: The largest request body taken (a form: a token, or notes).
MAX_BODY = 64 * 1024
MAX_NOTES = 2000
#: Why a photo that came back is not drawn.
NOT_AN_IMAGE = "the stored photo is not an image a browser can show"
#: The gateway's refusals of a decision that the page answers in place, keeping the draft: the
#: reviewer can put them right (a missing reason, photos not yet shown) or must see why not.
KEEP_DRAFT_ON = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED}
)
#: The highest candidate rank a form may name (a search shows at most a few dozen).
MAX_RANK = 1000
#: The shortest session worth starting: a token with less life left (leeway included) is refused.
MIN_SESSION_S = 60
#: "Bearer " pasted before a token, as an Authorization header shows it.
BEARER_PREFIX = re.compile(r"^bearer\s+", re.IGNORECASE)
#: The longest period an oversight report covers.
MAX_REPORT_DAYS = 366
#: HTTP statuses for the gateway's refusals.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
#: The methods counted by name in the metrics; anything else is "other".
COUNTED_METHODS = frozenset({"GET", "HEAD", "POST"})
log = structlog.get_logger("candor.review")


class Refused(Exception):
    """A request the app turns down, with the HTTP status and the reason shown to the user."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class SignInFirst(Exception):
    """The request needs a session and has none (or its token expired)."""


class Desk:
    """The desk's settings and the parts its pages share; the gateway channel opens with the app."""

    def __init__(self, settings: ReviewSettings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.sealer = Sealer(settings.session_key)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals.update(
            status_words=STATUS_WORDS, decision_words=DECISION_WORDS, when=utc, ages=AGES, page_size=PAGE_SIZE,
            modes=MODES, zooms=ZOOMS, opacities=OPACITIES, face_look=Look(), conclusion_words=conclusions.WORDS,
            features=conclusions.FEATURES,
        )  # fmt: skip
        self.drafts = Drafts(self.sealer)
        self._http = http
        #: The gateway channel and the OpenID Connect client (None when not configured), while the app runs.
        self.channel: grpc.aio.Channel | None = None
        self.oidc: OidcClient | None = None

    @asynccontextmanager
    async def lifespan(self, _: Starlette) -> AsyncIterator[None]:
        """Opens the gateway channel (and an HTTP client for OpenID Connect) for the app's life."""
        self.channel = channel = open_channel(self.settings.gateway, self.settings.gateway_ca)
        client = self._http or httpx.AsyncClient(timeout=self.settings.timeout_s)
        self.oidc = OidcClient(self.settings.oidc, client) if self.settings.oidc else None
        try:
            yield
        finally:
            await channel.close()
            if self._http is None:
                await client.aclose()

    def gateway_for(self, session: Session) -> Gateway:
        """The gateway, called with the session's own token."""
        assert self.channel is not None, "the app's lifespan opens the channel before any request"
        return Gateway(self.channel, session.token, self.settings.timeout_s)

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """A page from its template, with the session and the sign-in options."""
        session = request.scope.get("candor.session")
        return self.templates.TemplateResponse(
            request, name, {"session": session, "oidc": self.settings.oidc is not None, **context}, status_code=status
        )

    def error_page(self, request: Request, status: int, reason: str) -> Response:
        """The desk's own page for a request it cannot serve: a heading that says what happened
        (not found, refused, unavailable...) and the reason."""
        return self.render(request, "error.html", status, title=error_title(status), reason=reason)

    def need(self, request: Request, *roles: str) -> Session:
        """The session, refused unless signed in with one of ``roles``."""
        session: Session | None = request.scope.get("candor.session")
        if session is None:
            raise SignInFirst()
        if not session.has(*roles):
            allowed = " or ".join(f"{role}s" for role in roles)
            raise Refused(403, f"this page is for {allowed}; you are signed in as {', '.join(session.roles)}")
        return session

    async def checked_form(self, request: Request, session: Session | None) -> FormData:
        """The posted form, refused unless it is small, same-origin and carries the CSRF token."""
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            raise Refused(413, "the form is too large")
        # Same-origin posts carry their origin (the referrer policy is same-origin); behind an
        # ingress that terminates TLS the scheme differs from ours, so the host is what is compared.
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            raise Refused(403, "the form was posted from another site")
        # A decision form: its conclusion, notes and CSRF token, and up to every feature ticked.
        form = await request.form(max_files=0, max_fields=8 + len(conclusions.FEATURES), max_part_size=MAX_BODY)
        if session is not None:
            expected = session.csrf
        else:  # the sign-in form: its token is in the sign-in cookie
            expected = str((self.sealer.open(LOGIN_COOKIE, request.cookies.get(LOGIN_COOKIE)) or {}).get("csrf", ""))
        if not same_token(expected, form.get("csrf")):
            raise Refused(403, "the form's CSRF token is missing or wrong; reload the page and try again")
        return form

    def start_session(self, token: str) -> Session:
        """A session for a token the gateway would accept, held by someone this desk serves."""
        try:
            principal = self.settings.tokens.authenticate(f"Bearer {token}")
        except Unauthenticated as exc:
            raise Refused(401, f"sign-in refused: {exc.message}") from exc
        if not principal.roles & set(DESK_ROLES):
            raise Refused(403, "this desk is for reviewers, supervisors and auditors")
        now = int(time.time())
        # The gateway accepts a token until its expiry plus the clock leeway; a session lasts no
        # longer, and is not started for less than a minute's work.
        usable_until = principal.expires_at + self.settings.tokens.leeway_s
        if usable_until - now < MIN_SESSION_S:
            raise Refused(
                401,
                f"sign-in refused: your token expired at {utc(Timestamp(seconds=principal.expires_at))} and "
                f"the gateway stops accepting it within a minute (clock leeway {self.settings.tokens.leeway_s} s); "
                "ask your identity provider for a new token",
            )
        expires = min(usable_until, now + self.settings.session_ttl_s)
        session = Session(principal.user, tuple(sorted(principal.roles)), token, new_csrf(), expires)
        log.info("signed_in", user=session.user, roles=list(session.roles))
        return session

    def set_session(self, response: Response, session: Session) -> None:
        """Sets the sealed session cookie (and drops the sign-in cookie)."""
        response.set_cookie(
            SESSION_COOKIE,
            self.sealer.seal_session(session),
            # Kept by the browser an hour past the session's end (which the sealed expiry enforces),
            # so a decision posted just after it is recognised as this browser's and kept.
            max_age=max(1, session.expires_at - int(time.time())) + DRAFT_TTL_S,
            path="/",
            secure=True,
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="lax")

    def login_form(self, request: Request, status: int = 200, error: str = "", said: str = "") -> Response:
        """The sign-in page, with a fresh CSRF token kept in the sign-in cookie."""
        csrf = new_csrf()
        response = self.render(request, "login.html", status, csrf=csrf, error=error, said=said)
        self.remember_sign_in(response, {"csrf": csrf}, "strict")
        return response

    def remember_sign_in(
        self, response: Response, value: dict[str, object], samesite: Literal["strict", "lax"]
    ) -> None:
        """Keep what a sign-in under way needs, for ten minutes, in the sealed sign-in cookie."""
        response.set_cookie(
            LOGIN_COOKIE,
            self.sealer.seal(LOGIN_COOKIE, value),
            max_age=600,
            path="/",
            secure=True,
            httponly=True,
            samesite=samesite,
        )

    def look_of(self, request: Request) -> Look:
        """The comparison view the query asks for; refused (400) when it names none."""
        try:
            return Look.parse(request.query_params)
        except LookError as exc:
            raise Refused(400, str(exc)) from exc

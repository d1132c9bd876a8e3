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

import datetime as dt
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import grpc
import httpx
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from candor.gateway.v1 import gateway_pb2
from candor_cli.report import (
    AGREEMENT_NOTE,
    EVIDENCE_KINDS,
    PROFICIENCY_HEADER,
    PROFICIENCY_NOTE,
    REVIEWS_NOTE,
    OversightReport,
    agreement_rows,
    compute,
    models_view,
    proficiency_rows,
    to_csv,
    to_pdf,
    utc,
)
from candor_kit import Unauthenticated, conclusions, metrics
from candor_kit.policy import CASE_NUMBER
from candor_review.compare import MODES, OPACITIES, ZOOMS, Look, LookError, shown
from candor_review.drafts import DRAFT_TTL_S, Draft, Drafts
from candor_review.gateway import Gateway, open_channel
from candor_review.oidc import OidcClient
from candor_review.queue import AGES, PAGE_SIZE, QueueQuery, QueueQueryError
from candor_review.session import LOGIN_COOKIE, SESSION_COOKIE, Sealer, Session, new_csrf, same_token
from candor_review.settings import ReviewSettings
from candor_review.views import DECISION_WORDS, STATUS_WORDS, error_title, probe_quality

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
tracer = trace.get_tracer("candor.review")


class Refused(Exception):
    """A request the app turns down, with the HTTP status and the reason shown to the user."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class SignInFirst(Exception):
    """The request needs a session and has none (or its token expired)."""


def create_app(settings: ReviewSettings, http: httpx.AsyncClient | None = None) -> Starlette:
    """The web app, talking to the gateway (and the OpenID Connect provider, when configured)."""
    sealer = Sealer(settings.session_key)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(
        status_words=STATUS_WORDS, decision_words=DECISION_WORDS, when=utc, ages=AGES, page_size=PAGE_SIZE,
        modes=MODES, zooms=ZOOMS, opacities=OPACITIES, face_look=Look(), conclusion_words=conclusions.WORDS,
        features=conclusions.FEATURES,
    )  # fmt: skip
    drafts = Drafts(sealer)
    shared: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        shared["channel"] = open_channel(settings.gateway, settings.gateway_ca)
        client = http or httpx.AsyncClient(timeout=settings.timeout_s)
        shared["oidc"] = OidcClient(settings.oidc, client) if settings.oidc else None
        try:
            yield
        finally:
            await shared["channel"].close()
            if http is None:
                await client.aclose()

    def gateway_for(session: Session) -> Gateway:
        return Gateway(shared["channel"], session.token, settings.timeout_s)

    def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
        session = request.scope.get("candor.session")
        return templates.TemplateResponse(
            request, name, {"session": session, "oidc": settings.oidc is not None, **context}, status_code=status
        )

    def error_page(request: Request, status: int, reason: str) -> Response:
        """The desk's own page for a request it cannot serve: a heading that says what happened
        (not found, refused, unavailable...) and the reason."""
        return render(request, "error.html", status, title=error_title(status), reason=reason)

    def need(request: Request, *roles: str) -> Session:
        session: Session | None = request.scope.get("candor.session")
        if session is None:
            raise SignInFirst()
        if not session.has(*roles):
            allowed = " or ".join(f"{role}s" for role in roles)
            raise Refused(403, f"this page is for {allowed}; you are signed in as {', '.join(session.roles)}")
        return session

    async def checked_form(request: Request, session: Session | None) -> FormData:
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
            expected = str((sealer.open(LOGIN_COOKIE, request.cookies.get(LOGIN_COOKIE)) or {}).get("csrf", ""))
        if not same_token(expected, form.get("csrf")):
            raise Refused(403, "the form's CSRF token is missing or wrong; reload the page and try again")
        return form

    def start_session(token: str) -> Session:
        """A session for a token the gateway would accept, held by someone this desk serves."""
        try:
            principal = settings.tokens.authenticate(f"Bearer {token}")
        except Unauthenticated as exc:
            raise Refused(401, f"sign-in refused: {exc.message}") from exc
        if not principal.roles & set(DESK_ROLES):
            raise Refused(403, "this desk is for reviewers, supervisors and auditors")
        now = int(time.time())
        # The gateway accepts a token until its expiry plus the clock leeway; a session lasts no
        # longer, and is not started for less than a minute's work.
        usable_until = principal.expires_at + settings.tokens.leeway_s
        if usable_until - now < MIN_SESSION_S:
            raise Refused(
                401,
                f"sign-in refused: your token expired at {utc(Timestamp(seconds=principal.expires_at))} and "
                f"the gateway stops accepting it within a minute (clock leeway {settings.tokens.leeway_s} s); "
                "ask your identity provider for a new token",
            )
        expires = min(usable_until, now + settings.session_ttl_s)
        session = Session(principal.user, tuple(sorted(principal.roles)), token, new_csrf(), expires)
        log.info("signed_in", user=session.user, roles=list(session.roles))
        return session

    def set_session(response: Response, session: Session) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            sealer.seal_session(session),
            # Kept by the browser an hour past the session's end (which the sealed expiry enforces),
            # so a decision posted just after it is recognised as this browser's and kept.
            max_age=max(1, session.expires_at - int(time.time())) + DRAFT_TTL_S,
            path="/",
            secure=True,
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie(LOGIN_COOKIE, path="/", secure=True, httponly=True, samesite="lax")

    # --- pages ---------------------------------------------------------------------------------

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def no_icon(_: Request) -> Response:
        return Response(status_code=204)

    async def login_page(request: Request) -> Response:
        if request.scope.get("candor.session") is not None:
            return RedirectResponse("/", status_code=303)
        said = "You are signed out." if request.query_params.get("signed_out") else ""
        return login_form(request, said=said)

    def login_form(request: Request, status: int = 200, error: str = "", said: str = "") -> Response:
        csrf = new_csrf()
        response = render(request, "login.html", status, csrf=csrf, error=error, said=said)
        remember_sign_in(response, {"csrf": csrf}, "strict")
        return response

    def remember_sign_in(response: Response, value: dict[str, object], samesite: Literal["strict", "lax"]) -> None:
        """Keep what a sign-in under way needs, for ten minutes, in the sealed sign-in cookie."""
        response.set_cookie(
            LOGIN_COOKIE,
            sealer.seal(LOGIN_COOKIE, value),
            max_age=600,
            path="/",
            secure=True,
            httponly=True,
            samesite=samesite,
        )

    async def login(request: Request) -> Response:
        form = await checked_form(request, None)
        token = BEARER_PREFIX.sub("", str(form.get("token") or "").strip())
        if not token:
            return login_form(request, 400, "paste the token your identity provider issued")
        try:
            session = start_session(token)
        except Refused as refused:
            return login_form(request, refused.status, refused.reason)
        response = RedirectResponse(drafts.resume_url(request, session.user) or "/", status_code=303)
        set_session(response, session)
        return response

    async def logout(request: Request) -> Response:
        session = request.scope.get("candor.session")
        response: Response = RedirectResponse("/login?signed_out=1", status_code=303)
        if session is not None:
            await checked_form(request, session)
            try:
                # The token is revoked at the gateway, so the cookie is dead on the server side
                # too: replayed from anywhere, it records nothing.
                await gateway_for(session).end_session()
                log.info("signed_out", user=session.user)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAUTHENTICATED:  # else it was dead already
                    log.error("sign_out_not_recorded", user=session.user, code=error.code().name)
                    reason = (
                        "you are signed out in this browser, but the gateway could not revoke your sign-in "
                        f"({error.details()}); sign in and out again, or ask an administrator to revoke it"
                    )
                    response = error_page(request, 502, reason)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    async def oidc_start(request: Request) -> Response:
        oidc: OidcClient | None = shared["oidc"]
        if oidc is None:
            raise Refused(404, "sign-in through an identity provider is not configured")
        url, remembered = await oidc.start()
        response = RedirectResponse(url, status_code=303)
        # Lax, so the browser sends it back on the provider's redirect to /oidc/callback.
        remember_sign_in(response, remembered, "lax")
        return response

    async def oidc_callback(request: Request) -> Response:
        oidc: OidcClient | None = shared["oidc"]
        if oidc is None:
            raise Refused(404, "sign-in through an identity provider is not configured")
        remembered = sealer.open(LOGIN_COOKIE, request.cookies.get(LOGIN_COOKIE))
        try:
            token = await oidc.finish(
                request.query_params.get("code", ""), request.query_params.get("state", ""), remembered
            )
        except Unauthenticated as exc:
            return login_form(request, 401, f"sign-in refused: {exc.message}")
        session = start_session(token)
        # A page, not a redirect: the Strict session cookie is then sent on a same-site navigation.
        response = render(
            request, "signed_in.html", user=session.user, onward=drafts.resume_url(request, session.user) or "/"
        )
        set_session(response, session)
        return response

    async def queue(request: Request) -> Response:
        session = need(request, *DESK_ROLES)
        context: dict[str, Any] = {"today": dt.date.today().isoformat(), "pending": None}
        if session.has("reviewer", "supervisor"):
            try:
                shown = QueueQuery.parse(request.query_params)
            except QueueQueryError as exc:
                raise Refused(400, str(exc)) from exc
            found = await gateway_for(session).pending(shown.request())
            context.update(pending=found.searches, total=found.total, more=found.more, shown=shown)
        return render(request, "queue.html", **context)

    async def search_page(request: Request) -> Response:
        session = need(request, *DESK_ROLES)
        search_id = request.path_params["search_id"]
        decided = request.query_params.get("decided", "")
        if decided and not (decided.isascii() and decided.isdigit() and len(decided) <= 6):
            raise Refused(400, "decided names a candidate's rank: a number")
        rank = request.query_params.get("rank", decided or "")
        if rank and not (rank.isascii() and rank.isdigit() and 1 <= int(rank) <= MAX_RANK):
            raise Refused(400, f"rank names a candidate: a number from 1 to {MAX_RANK}")
        draft = drafts.take(request, session, search_id)
        context = await search_context(session, search_id, look_of(request), int(rank or 0), draft)
        if decided or draft or not any(row["may_decide"] for row in context["rows"]):
            context["next_search"] = await next_search(session, search_id)
        response = render(request, "search.html", decided=int(decided) if decided else None, **context)
        if draft is not None:
            drafts.forget(response)
        return response

    def look_of(request: Request) -> Look:
        try:
            return Look.parse(request.query_params)
        except LookError as exc:
            raise Refused(400, str(exc)) from exc

    async def search_context(
        session: Session, search_id: str, look: Look, rank: int, draft: Draft | None, error: str = ""
    ) -> dict[str, Any]:
        """What the search page shows: the probe and its quality, every candidate (for the strip)
        and the one in focus (``rank``; else the first this user may decide, else the first), with
        the user's draft decision on it."""
        gateway = gateway_for(session)
        review = await gateway.search(search_id)
        probe_photo, probe_missing = await fetched(gateway, search_id, 0)
        rows = []
        for reviewed in review.candidates:
            photo, missing = await fetched(gateway, search_id, reviewed.candidate.rank)
            mine = next((r for r in reviewed.reviews if r.reviewer == session.user), None)
            may_decide = (
                session.user != review.searched_by
                and mine is None
                and (
                    ("reviewer" in session.roles and reviewed.status == gateway_pb2.CANDIDATE_STATUS_UNSPECIFIED)
                    or ("supervisor" in session.roles and reviewed.status == gateway_pb2.CANDIDATE_STATUS_DISPUTED)
                )
            )
            drawn = shown(photo) if photo else None  # decoded once: the strip and the comparison share it
            rows.append(
                {
                    "reviewed": reviewed,
                    "shown": drawn,
                    "missing": missing if not photo else "" if drawn else NOT_AN_IMAGE,
                    "may_decide": may_decide,
                    "mine": mine,
                    "origin": photo.origin if photo else "",
                    "metadata": dict(photo.metadata) if photo else {},
                    "stored": utc(photo.stored_at) if photo else "",
                }
            )
        if rank and not any(row["reviewed"].candidate.rank == rank for row in rows):
            raise Refused(404, f"search {search_id} has no candidate {rank}")
        focus = next(
            (row for row in rows if row["reviewed"].candidate.rank == rank),
            next((row for row in rows if row["may_decide"]), rows[0] if rows else None),
        )
        probe = shown(probe_photo) if probe_photo else None
        return {
            "review": review,
            "probe": probe,
            "probe_missing": probe_missing if not probe_photo else "" if probe else NOT_AN_IMAGE,
            "quality": probe_quality(review.probe_quality, probe_photo),
            "rows": rows,
            "focus": focus,
            "look": look,
            "draft": draft or Draft(search_id, 0, "", ""),
            "draft_restored": draft is not None and not error,
            "draft_error": error,
            "next_search": None,
        }

    async def fetched(gateway: Gateway, search_id: str, rank: int) -> tuple[gateway_pb2.Photo | None, str]:
        """A photo of the search, or why there is none to show."""
        try:
            return await gateway.photo(search_id, rank), ""
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                raise
            return None, error.details() or "not shown"

    async def next_search(session: Session, search_id: str) -> str | None:
        """The first search in this user's queue other than ``search_id``, if any waits."""
        if not session.has("reviewer", "supervisor"):
            return None
        found = await gateway_for(session).pending(gateway_pb2.ListPendingReviewsRequest(limit=2))
        return next((s.search_id for s in found.searches if s.search_id != search_id), None)

    async def decide(request: Request) -> Response:
        search_id, rank = request.path_params["search_id"], request.path_params["rank"]
        session = request.scope.get("candor.session")
        if session is None:
            # The session ended while the reviewer worked: keep what they wrote, sealed, and bring
            # them back to it after they sign in again. Nothing is recorded until they do.
            return await keep_draft_and_sign_in(request, search_id, rank)
        session = need(request, "reviewer", "supervisor")
        form = await checked_form(request, session)
        if not 1 <= rank <= MAX_RANK:
            raise Refused(400, f"a candidate's rank is 1 to {MAX_RANK}")
        draft = posted_draft(search_id, rank, form)
        look = look_of(request)
        decision = conclusions.VALUES.get(draft.decision)
        problem, status = "", 400
        if decision is None:
            problem = "choose a conclusion, from same person to insufficient quality"
        elif len(draft.notes) > MAX_NOTES:
            problem = f"notes take at most {MAX_NOTES} characters; shorten them"
        elif draft.decision in conclusions.NEED_FEATURES and not draft.features:
            problem = f"tick the features your {conclusions.WORDS[draft.decision]} conclusion rests on"
        elif not draft.notes and (draft.decision != conclusions.SUPPORTS_LEAD or not session.has("reviewer")):
            problem = (
                f"write why in the notes: a {conclusions.WORDS[draft.decision]} conclusion (and a supervisor's "
                "decision) needs a reason"
            )
        if not problem:
            try:
                await gateway_for(session).decide(search_id, rank, decision, draft.notes, draft.features)  # type: ignore[arg-type]
            except grpc.aio.AioRpcError as error:
                if error.code() not in KEEP_DRAFT_ON:
                    raise
                problem = error.details() or "the decision was not recorded"
                status = HTTP_STATUS[error.code()]
        if problem:
            # Answered on the same page, at the same candidate and view, with what was written kept.
            context = await search_context(session, search_id, look, rank, draft, error=problem)
            return render(request, "search.html", status, decided=None, **context)
        query = look.query()
        return RedirectResponse(
            f"/searches/{search_id}?decided={rank}{'&' + query if query else ''}#compare", status_code=303
        )

    def posted_draft(search_id: str, rank: int, form: FormData) -> Draft:
        """What a decision form carries: the conclusion, the notes and the features ticked."""
        features = tuple(dict.fromkeys(str(f) for f in form.getlist("features") if str(f) in conclusions.FEATURES))
        notes = str(form.get("notes") or "").strip()
        return Draft(search_id, rank, str(form.get("decision") or ""), notes, features)

    async def analyse(request: Request) -> Response:
        """The probe's analysis, posted before the candidates are shown."""
        session = need(request, "reviewer", "supervisor")
        form = await checked_form(request, session)
        search_id = request.path_params["search_id"]
        look = look_of(request)
        choice, notes = str(form.get("analysis") or ""), str(form.get("notes") or "").strip()
        problem, status = "", 400
        if choice not in ("sufficient", "insufficient"):
            problem = "say whether the probe is sufficient to compare"
        elif choice == "insufficient" and not notes:
            problem = "write why the probe is insufficient in the notes"
        if not problem:
            try:
                await gateway_for(session).analyse(search_id, choice == "sufficient", notes)
            except grpc.aio.AioRpcError as error:
                if error.code() not in KEEP_DRAFT_ON:
                    raise
                problem = error.details() or "the analysis was not recorded"
                status = HTTP_STATUS[error.code()]
        if problem:
            context = await search_context(session, search_id, look, 0, Draft(search_id, 0, choice, notes), problem)
            return render(request, "search.html", status, decided=None, **context)
        query = look.query()
        return RedirectResponse(f"/searches/{search_id}{'?' + query if query else ''}", status_code=303)

    async def keep_draft_and_sign_in(request: Request, search_id: str, rank: int) -> Response:
        """A decision posted after the session expired: kept (when the form is this browser's own:
        its CSRF token is the expired session's), and the sign-in form says so."""
        form = await checked_form_of_expired(request)
        if form is None:
            return error_page(request, 401, "sign in first")
        draft = posted_draft(search_id, rank, form)
        response = login_form(
            request,
            401,
            said=f"Your session ended before your decision on candidate {rank} was recorded. It is kept: sign in "
            "again and you return to it, to check and record it.",
        )
        drafts.keep(response, draft, expired_user(request), look_of(request).query())
        return response

    def expired_user(request: Request) -> str:
        expired = sealer.open_any_session(request.cookies.get(SESSION_COOKIE))
        return expired.user if expired else ""

    async def checked_form_of_expired(request: Request) -> FormData | None:
        """The posted form when it carries the CSRF token of this browser's expired session."""
        expired = sealer.open_any_session(request.cookies.get(SESSION_COOKIE))
        if expired is None:
            return None
        try:
            return await checked_form(request, expired)
        except Refused:
            return None

    async def case_page(request: Request) -> Response:
        session = need(request, "supervisor", "auditor")
        number = request.query_params.get("number", "").strip()
        if not number:
            return render(request, "case.html", case=None, number="")
        if not CASE_NUMBER.match(number):
            raise Refused(400, "a case number is 2 to 64 letters, digits and ._-/")
        case = await gateway_for(session).case(number)
        return render(request, "case.html", case=case, number=number)

    async def report_of(request: Request) -> tuple[OversightReport, str, str]:
        """The oversight report of the period the query names (today by default), for an auditor."""
        session = need(request, "auditor")
        today = dt.date.today()
        try:
            start = dt.date.fromisoformat(request.query_params.get("from") or today.isoformat())
            end = dt.date.fromisoformat(request.query_params.get("to") or today.isoformat())
        except ValueError as exc:
            raise Refused(400, "dates are YYYY-MM-DD") from exc
        if end < start or (end - start).days >= MAX_REPORT_DAYS:
            raise Refused(400, f"the period runs forward and covers at most {MAX_REPORT_DAYS} days")
        gateway = gateway_for(session)
        until = f"{(end + dt.timedelta(days=1)).isoformat()}T00:00:00Z"
        records = await gateway.audit_records(f"{start.isoformat()}T00:00:00Z", until)
        # The evidence, whenever it was made: the calibrations searches ran under, the tests' answers.
        evidence = await gateway.audit_records(None, until, kinds=EVIDENCE_KINDS)
        return compute(records, (start.isoformat(), end.isoformat()), evidence), start.isoformat(), end.isoformat()

    async def report_page(request: Request) -> Response:
        report, start, end = await report_of(request)
        models, calibrated = models_view(report)
        return render(
            request, "report.html", report=report, start=start, end=end, models=models, calibrated=calibrated,
            reviews_note=REVIEWS_NOTE.format(settled=report.settled_disputes),
            proficiency=proficiency_rows(report), proficiency_header=PROFICIENCY_HEADER,
            proficiency_note=PROFICIENCY_NOTE, agreement=agreement_rows(report), agreement_note=AGREEMENT_NOTE,
        )  # fmt: skip

    async def report_download(request: Request) -> Response:
        report, start, end = await report_of(request)
        form = request.url.path.rsplit(".", 1)[-1]
        name = f"candor-oversight-{start}-to-{end}.{form}"
        if form == "csv":
            body, media = to_csv(report).encode(), "text/csv; charset=utf-8"
        else:
            body, media = to_pdf(report), "application/pdf"
        return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})

    # --- errors and headers --------------------------------------------------------------------

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        return error_page(request, exc.status, exc.reason)

    async def sign_in_first(request: Request, _: Exception) -> Response:
        if request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        return error_page(request, 401, "sign in first")

    async def gateway_refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, grpc.aio.AioRpcError)
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            # The token expired or was revoked: the session goes with it.
            response = login_form(request, 401, f"signed out: {exc.details()}")
            response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
            return response
        status = HTTP_STATUS.get(exc.code(), 502)
        return error_page(request, status, exc.details() or "the gateway failed on this request; try again")

    async def no_such_page(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return error_page(request, 404, "there is no such page on the review desk; check the address")
        if exc.status_code == 405:
            return error_page(request, 405, "this page is opened with a link or a form, not that kind of request")
        return error_page(request, exc.status_code, str(exc.detail))

    async def around(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        request.scope["candor.session"] = sealer.open_session(request.cookies.get(SESSION_COOKIE))
        # Named by the method until the route is known: a path holds search ids and case numbers.
        with tracer.start_as_current_span(f"{request.method}", kind=trace.SpanKind.SERVER) as span:
            try:
                response = await call_next(request)
            except Exception:
                route = getattr(request.scope.get("route"), "path", None)
                log.exception("request_failed", method=request.method, path=route or "unmatched")
                response = error_page(request, 500, "the desk failed on this request; try again")
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
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/oidc/start", oidc_start),
        Route("/oidc/callback", oidc_callback),
        Route("/", queue),
        Route("/searches/{search_id:str}", search_page),
        Route("/searches/{search_id:str}/candidates/{rank:int}", decide, methods=["POST"]),
        Route("/searches/{search_id:str}/analysis", analyse, methods=["POST"]),
        Route("/case", case_page),
        Route("/report", report_page),
        Route("/report.csv", report_download),
        Route("/report.pdf", report_download),
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
        lifespan=lifespan,
    )

"""The examiner's pages: the queue of searches waiting, a search's probe analysis and its
candidates compared side by side, each conclusion recorded, and a decision posted after the
session ended kept for the reviewer."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from candor.gateway.v1 import gateway_pb2
from candor_cli.report import utc
from candor_kit import conclusions
from candor_review.compare import Look, shown
from candor_review.desk import (
    DESK_ROLES,
    HTTP_STATUS,
    KEEP_DRAFT_ON,
    MAX_NOTES,
    MAX_RANK,
    NOT_AN_IMAGE,
    Desk,
    Refused,
)
from candor_review.drafts import Draft
from candor_review.gateway import Gateway
from candor_review.queue import QueueQuery, QueueQueryError
from candor_review.session import SESSION_COOKIE, Session
from candor_review.views import probe_quality


class Examination:
    """The queue, the search page and the forms posted from it."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    def routes(self) -> list[Route]:
        """This part's pages and forms."""
        return [
            Route("/", self.queue),
            Route("/searches/{search_id:str}", self.search_page),
            Route("/searches/{search_id:str}/candidates/{rank:int}", self.decide, methods=["POST"]),
            Route("/searches/{search_id:str}/analysis", self.analyse, methods=["POST"]),
        ]

    async def queue(self, request: Request) -> Response:
        """The searches waiting for this user, paged, sorted and filtered."""
        session = self.desk.need(request, *DESK_ROLES)
        context: dict[str, Any] = {"today": dt.date.today().isoformat(), "pending": None}
        if session.has("reviewer", "supervisor"):
            try:
                shown = QueueQuery.parse(request.query_params)
            except QueueQueryError as exc:
                raise Refused(400, str(exc)) from exc
            found = await self.desk.gateway_for(session).pending(shown.request())
            context.update(pending=found.searches, total=found.total, more=found.more, shown=shown)
        return self.desk.render(request, "queue.html", **context)

    async def search_page(self, request: Request) -> Response:
        """A search: the probe's analysis, then its candidates compared with the probe."""
        session = self.desk.need(request, *DESK_ROLES)
        search_id = request.path_params["search_id"]
        decided = request.query_params.get("decided", "")
        if decided and not (decided.isascii() and decided.isdigit() and len(decided) <= 6):
            raise Refused(400, "decided names a candidate's rank: a number")
        rank = request.query_params.get("rank", decided or "")
        if rank and not (rank.isascii() and rank.isdigit() and 1 <= int(rank) <= MAX_RANK):
            raise Refused(400, f"rank names a candidate: a number from 1 to {MAX_RANK}")
        draft = self.desk.drafts.take(request, session, search_id)
        context = await self.search_context(session, search_id, self.desk.look_of(request), int(rank or 0), draft)
        if decided or draft or context["nothing_waits"]:
            context["next_search"] = await self.next_search(session, search_id)
        response = self.desk.render(request, "search.html", decided=int(decided) if decided else None, **context)
        if draft is not None:
            self.desk.drafts.forget(response)
        return response

    async def search_context(
        self, session: Session, search_id: str, look: Look, rank: int, draft: Draft | None, error: str = ""
    ) -> dict[str, Any]:
        """What the search page shows: the probe and its quality, every candidate (for the strip)
        and the one in focus (``rank``; else the first this user may decide, else the first), with
        the user's draft decision on it."""
        gateway = self.desk.gateway_for(session)
        review = await gateway.search(search_id)
        probe_photo, probe_missing = await self.fetched(gateway, search_id, 0)
        rows = []
        for reviewed in review.candidates:
            photo, missing = await self.fetched(gateway, search_id, reviewed.candidate.rank)
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
        # Candidates hidden until the probe's analysis: that step waits for this user.
        analysis_waits = bool(review.candidate_count and not rows)
        return {
            "nothing_waits": not analysis_waits and not any(row["may_decide"] for row in rows),
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

    async def fetched(self, gateway: Gateway, search_id: str, rank: int) -> tuple[gateway_pb2.Photo | None, str]:
        """A photo of the search, or why there is none to show."""
        try:
            return await gateway.photo(search_id, rank), ""
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                raise
            return None, error.details() or "not shown"

    async def next_search(self, session: Session, search_id: str) -> str | None:
        """The first search in this user's queue other than ``search_id``, if any waits."""
        if not session.has("reviewer", "supervisor"):
            return None
        found = await self.desk.gateway_for(session).pending(gateway_pb2.ListPendingReviewsRequest(limit=2))
        return next((s.search_id for s in found.searches if s.search_id != search_id), None)

    async def decide(self, request: Request) -> Response:
        """Records a conclusion on one candidate; refused ones come back on the page, kept."""
        search_id, rank = request.path_params["search_id"], request.path_params["rank"]
        session = request.scope.get("candor.session")
        if session is None:
            # The session ended while the reviewer worked: keep what they wrote, sealed, and bring
            # them back to it after they sign in again. Nothing is recorded until they do.
            return await self.keep_draft_and_sign_in(request, search_id, rank)
        session = self.desk.need(request, "reviewer", "supervisor")
        form = await self.desk.checked_form(request, session)
        if not 1 <= rank <= MAX_RANK:
            raise Refused(400, f"a candidate's rank is 1 to {MAX_RANK}")
        draft = self.posted_draft(search_id, rank, form)
        look = self.desk.look_of(request)
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
                await self.desk.gateway_for(session).decide(search_id, rank, decision, draft.notes, draft.features)  # type: ignore[arg-type]
            except grpc.aio.AioRpcError as error:
                if error.code() not in KEEP_DRAFT_ON:
                    raise
                problem = error.details() or "the decision was not recorded"
                status = HTTP_STATUS[error.code()]
        if problem:
            # Answered on the same page, at the same candidate and view, with what was written kept.
            context = await self.search_context(session, search_id, look, rank, draft, error=problem)
            return self.desk.render(request, "search.html", status, decided=None, **context)
        query = look.query()
        return RedirectResponse(
            f"/searches/{search_id}?decided={rank}{'&' + query if query else ''}#compare", status_code=303
        )

    def posted_draft(self, search_id: str, rank: int, form: FormData) -> Draft:
        """What a decision form carries: the conclusion, the notes and the features ticked."""
        features = tuple(dict.fromkeys(str(f) for f in form.getlist("features") if str(f) in conclusions.FEATURES))
        notes = str(form.get("notes") or "").strip()
        return Draft(search_id, rank, str(form.get("decision") or ""), notes, features)

    async def analyse(self, request: Request) -> Response:
        """The probe's analysis, posted before the candidates are shown."""
        session = self.desk.need(request, "reviewer", "supervisor")
        form = await self.desk.checked_form(request, session)
        search_id = request.path_params["search_id"]
        look = self.desk.look_of(request)
        choice, notes = str(form.get("analysis") or ""), str(form.get("notes") or "").strip()
        problem, status = "", 400
        if choice not in ("sufficient", "insufficient"):
            problem = "say whether the probe is sufficient to compare"
        elif choice == "insufficient" and not notes:
            problem = "write why the probe is insufficient in the notes"
        if not problem:
            try:
                await self.desk.gateway_for(session).analyse(search_id, choice == "sufficient", notes)
            except grpc.aio.AioRpcError as error:
                if error.code() not in KEEP_DRAFT_ON:
                    raise
                problem = error.details() or "the analysis was not recorded"
                status = HTTP_STATUS[error.code()]
        if problem:
            context = await self.search_context(
                session, search_id, look, 0, Draft(search_id, 0, choice, notes), problem
            )
            return self.desk.render(request, "search.html", status, decided=None, **context)
        query = look.query()
        return RedirectResponse(f"/searches/{search_id}{'?' + query if query else ''}", status_code=303)

    async def keep_draft_and_sign_in(self, request: Request, search_id: str, rank: int) -> Response:
        """A decision posted after the session expired: kept (when the form is this browser's own:
        its CSRF token is the expired session's), and the sign-in form says so."""
        form = await self.checked_form_of_expired(request)
        if form is None:
            return self.desk.error_page(request, 401, "sign in first")
        draft = self.posted_draft(search_id, rank, form)
        response = self.desk.login_form(
            request,
            401,
            said=f"Your session ended before your decision on candidate {rank} was recorded. It is kept: sign in "
            "again and you return to it, to check and record it.",
        )
        self.desk.drafts.keep(response, draft, self.expired_user(request), self.desk.look_of(request).query())
        return response

    def expired_user(self, request: Request) -> str:
        """The user of this browser's expired session, if any."""
        expired = self.desk.sealer.open_any_session(request.cookies.get(SESSION_COOKIE))
        return expired.user if expired else ""

    async def checked_form_of_expired(self, request: Request) -> FormData | None:
        """The posted form when it carries the CSRF token of this browser's expired session."""
        expired = self.desk.sealer.open_any_session(request.cookies.get(SESSION_COOKIE))
        if expired is None:
            return None
        try:
            return await self.desk.checked_form(request, expired)
        except Refused:
            return None

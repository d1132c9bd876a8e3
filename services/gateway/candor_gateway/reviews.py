"""The two-reviewer workflow, event-sourced from the audit chain.

A search's candidates are reviewed by people other than the searcher. Each decision is an audit
event (``review.submitted``); the state of every candidate is computed from those events alone, so
the chain is the one record of who decided what, and the oversight report and the discovery export
see exactly what the workflow saw. The rules:

- a reviewer first records their analysis of the probe alone (``review.analysed``: sufficient to
  compare or not) and sees no candidate before it; an insufficient probe ends their review, each
  candidate getting their "insufficient" conclusion;
- each conclusion is graded (same person, probably same, inconclusive, probably different,
  different, insufficient; ``candor_kit.conclusions``) and names the facial features it rests on;
- a candidate is a lead only when ``needed`` different reviewers conclude "same person"; when none
  of them does and none says "probably same", it is rejected (not a lead); otherwise it is disputed
  and a supervisor (not the searcher, not one of its reviewers) settles it;
- the searcher cannot review their own search, and nobody reviews the same candidate twice;
- reviews are blind: a reviewer sees only their own decisions, never another's or the outcome;
  with the policy's ``score_blind``, not the distances nor the search's order either.

The outcome of each candidate is written as its own event (``review.confirmed``,
``review.rejected``, ``review.disputed``) with an id derived from the search and rank, so two
gateways that both see the last review record it once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from candor.audit.v1 import audit_pb2
from candor.common.v1 import common_pb2
from candor.gateway.v1 import gateway_pb2
from candor_gateway.access import Permission, require
from candor_gateway.audit_reader import AuditReader
from candor_gateway.blind import BlindOrder
from candor_gateway.photos import PhotoStore
from candor_gateway.policy import PolicyHolder
from candor_gateway.proficiency import SCORED, SEEDED
from candor_gateway.refusals import audit_refusal
from candor_gateway.review_queue import DEFAULT_PAGE, MAX_PAGE, PENDING_ORDERS, pending_filter
from candor_gateway.search_file import (
    ANALYSED,
    SEARCHED,
    SUBMITTED,
    SearchFile,
    analysis_event_id,
    fold,
    review_event_id,
)
from candor_kit import (
    AuditPublisher,
    CandorError,
    InvalidInput,
    NotFound,
    PolicyViolation,
    PreconditionFailed,
    conclusions,
)
from candor_kit.policy import MAX_CASE_CHARS, Rule, is_printable
from candor_kit.tokens import Principal

#: The outcome events, by the status they record.
OUTCOME_KINDS = {
    gateway_pb2.CANDIDATE_STATUS_LEAD: "review.confirmed",
    gateway_pb2.CANDIDATE_STATUS_REJECTED: "review.rejected",
    gateway_pb2.CANDIDATE_STATUS_DISPUTED: "review.disputed",
}
DECISIONS = conclusions.NAMES
DECISION_VALUES = conclusions.VALUES
MAX_NOTES = 2000
#: The statuses that end a candidate's review.
DECIDED = frozenset({gateway_pb2.CANDIDATE_STATUS_LEAD, gateway_pb2.CANDIDATE_STATUS_REJECTED})
#: Roles that see every review of a search (everyone else who may look sees only their own).
FULL_VIEW_ROLES = frozenset({"supervisor", "auditor"})
#: Roles that may look at any search; an investigator sees only their own.
REVIEWING_ROLES = frozenset({"reviewer", "supervisor", "auditor"})


class ReviewDesk:
    """The review use cases: what waits for review, one decision, and one search's state."""

    def __init__(
        self,
        reader: AuditReader,
        audit: AuditPublisher,
        policy: PolicyHolder,
        photos: PhotoStore,
        locate: Callable[[bytes, common_pb2.Box | None], Awaitable[common_pb2.DetectedFace | None]],
    ) -> None:
        self._locate = locate
        self._blind = BlindOrder(photos.blind_key)
        self._reader = reader
        self._audit = audit
        self._policy = policy
        self._photos = photos

    async def _search_file(self, search_id: str, reader: str) -> SearchFile:
        """A search and its reviews, read from the chain for the user ``reader``."""
        if not search_id.strip():
            raise InvalidInput("search_id is required")
        searched = await self._searched(search_id, reader)
        if not searched:
            raise NotFound(f"no search {search_id}")
        reviews = await self._reader.records(
            on_behalf_of=reader, kinds=[SUBMITTED, ANALYSED], case_number=searched[0].event.case_number, fresh=False
        )
        return fold([*searched, *reviews], self._policy.current.reviews.needed)[search_id]

    async def _searched(self, search_id: str, reader: str) -> list[audit_pb2.AuditRecord]:
        """The search's own record on the chain (a list of one), or an empty list."""
        searched = await self._reader.records(
            on_behalf_of=reader, kinds=[SEARCHED, SEEDED], event_id=search_id, at_most=1
        )
        if not searched:
            # Made through another gateway replica a moment ago, perhaps: read again once the
            # chain holds everything on the audit stream.
            searched = await self._reader.records(
                on_behalf_of=reader, kinds=[SEARCHED, SEEDED], event_id=search_id, at_most=1, everyones=True
            )
        return searched

    async def search_recorded(self, search_id: str) -> bool:
        """Whether the chain holds the search, read for the system's own sweeps (its reviews are
        not read: cheaper than ``search_file``)."""
        return bool(await self._searched(search_id, "system"))

    async def searches_recorded_since(self, since: dt.datetime) -> set[str]:
        """The ids of the searches the chain holds, recorded since ``since``, read for the system's
        own sweeps in one paged read (only the ids are kept)."""
        recorded: set[str] = set()
        async for page in self._reader.pages(on_behalf_of="system", kinds=[SEARCHED, SEEDED], since=since, fresh=False):
            recorded.update(record.event.event_id for record in page)
        return recorded

    async def search_files_since(self, since: dt.datetime, search_ids: Collection[str]) -> dict[str, SearchFile]:
        """The searches of ``search_ids`` recorded since ``since``, each with its reviews, read for
        the system's own sweeps in one paged read (only their records are kept); one the chain
        does not hold (or holds from before ``since``) is missing from the answer."""
        wanted = set(search_ids)
        kept: list[audit_pb2.AuditRecord] = []
        async for page in self._reader.pages(
            on_behalf_of="system", kinds=[SEARCHED, SEEDED, SUBMITTED, ANALYSED], since=since, fresh=False
        ):
            kept.extend(record for record in page if _search_of(record) in wanted)
        return fold(kept, self._policy.current.reviews.needed)

    async def search_files(self, search_ids: Collection[str]) -> dict[str, SearchFile]:
        """The searches of ``search_ids`` (at most 1000), each with its reviews, read for the
        system's own sweeps in two reads however many they are: the searches by their ids, then
        the reviews of their cases (``fold`` keeps only those of these searches); one the chain
        does not hold is missing from the answer."""
        wanted = set(search_ids)
        if not wanted:
            return {}
        searched = await self._reader.records(on_behalf_of="system", kinds=[SEARCHED, SEEDED], event_ids=wanted)
        if not searched:
            return {}
        reviews = await self._reader.records(
            on_behalf_of="system",
            kinds=[SUBMITTED, ANALYSED],
            case_numbers={record.event.case_number for record in searched},
            fresh=False,
        )
        return fold([*searched, *reviews], self._policy.current.reviews.needed)

    async def search_file(self, search_id: str) -> SearchFile | None:
        """A search and every review of it, read for the system's own sweeps; None when the chain
        holds no such search."""
        try:
            return await self._search_file(search_id, "system")
        except NotFound:
            return None

    async def get_search(
        self, principal: Principal, search_id: str, include_probe: bool = False
    ) -> gateway_pb2.SearchReview:
        """A search and its reviews as the caller may see them, with the retained probe when asked
        for (and the caller may compare it); the look is audited, saying whether the probe went."""
        found: SearchFile | None = None
        try:
            require(principal, Permission.GET_SEARCH)
            found = await self._search_file(search_id, principal.user)
            if not principal.roles & REVIEWING_ROLES and principal.user != found.searched_by:
                raise PolicyViolation(
                    f"{principal.user} may see only the searches it filed "
                    "(reviewers, supervisors and auditors see others)",
                    rule=Rule.ROLE,
                )
            probe = await self._probe_for(principal, found) if include_probe else b""
        except CandorError as error:
            await self._refused("search.view", error, principal, found)
            raise
        await self._audit.publish(
            "search.viewed",
            actor=principal.user,
            case_number=found.case_number,
            purpose=found.purpose,
            details={"search_id": search_id, "probe_shown": bool(probe)},
        )
        return self._view(principal, found, probe)

    async def list_pending(
        self, principal: Principal, request: gateway_pb2.ListPendingReviewsRequest
    ) -> gateway_pb2.ListPendingReviewsResponse:
        """Searches with candidates that wait for this caller (undecided ones for a reviewer,
        disputed ones for a supervisor), filtered, ordered and a page at a time, with the total."""
        try:
            require(principal, Permission.LIST_REVIEWS)
            matches = pending_filter(request)
            if not 0 <= request.limit <= MAX_PAGE:
                raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
            if request.offset < 0:
                raise InvalidInput("offset must be 0 or more")
            since = dt.datetime.now(dt.UTC) - dt.timedelta(days=self._policy.current.reviews.window_days)
            records = await self._reader.records(
                on_behalf_of=principal.user, kinds=[SEARCHED, SEEDED, SUBMITTED, ANALYSED], since=since
            )
            searches = fold(records, self._policy.current.reviews.needed)
        except CandorError as error:
            await self._refused("review.list", error, principal)
            raise
        waiting = [
            found for found in searches.values() if self._waiting_for(principal, found) and matches(principal, found)
        ]
        waiting.sort(key=PENDING_ORDERS.get(request.order, PENDING_ORDERS[gateway_pb2.PENDING_ORDER_OLDEST_FIRST]))
        page = waiting[request.offset : request.offset + (request.limit or DEFAULT_PAGE)]
        await self._audit.publish(
            "review.listed",
            actor=principal.user,
            details={"searches": [found.search_id for found in page], "total": len(waiting), "offset": request.offset},
        )
        return gateway_pb2.ListPendingReviewsResponse(
            searches=[self._view(principal, found) for found in page],
            total=len(waiting),
            more=request.offset + len(page) < len(waiting),
        )

    async def submit(
        self, principal: Principal, request: gateway_pb2.SubmitReviewRequest
    ) -> gateway_pb2.SubmitReviewResponse:
        """Record one decision on one candidate, then the candidate's outcome if this decided it."""
        found: SearchFile | None = None
        rank: int | None = None
        try:
            require(principal, Permission.SUBMIT_REVIEW)
            decision, features = review_decision(request)
            found = await self._search_file(request.search_id, principal.user)
            self._require_analysis(principal, found)
            rank = self.true_rank(principal, found, request.rank)
            found.candidate(rank)
            role = self._reviewing_role(principal, found, rank)
            if (decision != conclusions.SUPPORTS_LEAD or role == "supervisor") and not request.notes.strip():
                raise InvalidInput(
                    f"notes are required for a {conclusions.WORDS[decision]} conclusion and for a supervisor's "
                    "decision: say why"
                )
            await self._require_photos_shown(principal.user, found, rank)
        except CandorError as error:
            if found is not None and rank is not None and principal.user in found.reviewers(rank):
                # Their review is on the chain, so this is a retry (its answer lost, or the
                # outcome's record failed after it): the outcome their review decided is recorded
                # now if it never was, or the lead would never reach the case system.
                await self._publish_outcome(found, rank)
            await self._refused("review", error, principal, found)
            raise
        review_id, status = await self._conclude(found, rank, principal.user, role, decision, request.notes, features)
        blind = not principal.roles & FULL_VIEW_ROLES
        return gateway_pb2.SubmitReviewResponse(
            review_id=review_id, status=gateway_pb2.CANDIDATE_STATUS_UNSPECIFIED if blind else status
        )

    async def _conclude(
        self,
        found: SearchFile,
        rank: int,
        reviewer: str,
        role: str,
        decision: str,
        notes: str,
        features: tuple[str, ...] = (),
    ) -> tuple[str, int]:
        """Record one conclusion on one candidate (its event id is the reviewer's one possible
        review of it), then the candidate's outcome if this decided it; the review id and status."""
        candidate = found.candidate(rank)
        submission = str(uuid.uuid4())
        review_id = await self._audit.publish(
            SUBMITTED,
            event_id=review_event_id(found.search_id, rank, reviewer),
            actor=reviewer,
            case_number=found.case_number,
            purpose=found.purpose,
            details={
                "search_id": found.search_id,
                "rank": rank,
                "subject_id": candidate["subject_id"],
                "record_id": candidate.get("record_id", ""),
                "decision": decision,
                "features": list(features),
                "role": role,
                "notes": notes.strip(),
                "submission": submission,
            },
        )
        return review_id, await self._record_outcome(found.search_id, rank, reviewer, submission)

    def _require_analysis(self, principal: Principal, found: SearchFile) -> None:
        """Refused until the caller, when they compare faces in this search, has recorded their
        analysis of the probe, and while that analysis found it insufficient."""
        if self._must_analyse(principal, found):
            raise PreconditionFailed(
                "record your analysis of the probe first (is it good enough to compare?): no candidate is "
                "shown before it",
                rule=Rule.REVIEW,
            )
        if found.analyses.get(principal.user) is False and not principal.roles & FULL_VIEW_ROLES:
            raise PreconditionFailed(
                "you found the probe insufficient to compare; your review of this search is complete",
                rule=Rule.REVIEW,
            )

    async def record_analysis(
        self, principal: Principal, request: gateway_pb2.RecordAnalysisRequest
    ) -> gateway_pb2.RecordAnalysisResponse:
        """ACE-V's analysis: the caller's judgement of the probe alone, before any candidate is
        shown to them. Recorded once per reviewer and search (concurrent calls store one event);
        an insufficient probe gives each candidate still waiting for them their "insufficient"
        conclusion, so the search does not wait on a review that cannot happen."""
        found: SearchFile | None = None
        try:
            require(principal, Permission.RECORD_ANALYSIS)
            notes = request.notes.strip()
            if len(notes) > MAX_NOTES or not is_printable(re.sub(r"\r?\n|\t", " ", notes)):
                raise InvalidInput(f"notes are at most {MAX_NOTES} characters, with no control characters")
            if not request.sufficient and not notes:
                raise InvalidInput("say why the probe is insufficient to compare, in the notes")
            found = await self._search_file(request.search_id, principal.user)
            if principal.user == found.searched_by:
                raise PolicyViolation("the searcher may not review their own search", rule=Rule.OWN_SEARCH)
            if principal.user in found.analyses:
                raise PreconditionFailed(
                    f"{principal.user} has already recorded an analysis of this probe", rule=Rule.REVIEW
                )
        except CandorError as error:
            await self._refused("review.analysis", error, principal, found)
            raise
        await self._audit.publish(
            ANALYSED,
            event_id=analysis_event_id(found.search_id, principal.user),
            actor=principal.user,
            case_number=found.case_number,
            purpose=found.purpose,
            details={"search_id": found.search_id, "sufficient": request.sufficient, "notes": notes},
        )
        # Read back: of concurrent calls (through any gateway), the stored event is the analysis.
        found = await self._search_file(found.search_id, principal.user)
        sufficient = found.analyses.get(principal.user, request.sufficient)
        if not sufficient:
            for candidate in found.candidates:
                rank = candidate["rank"]
                try:
                    role = self._reviewing_role(principal, found, rank)
                except CandorError:
                    continue  # decided already, or not theirs to review
                with contextlib.suppress(PreconditionFailed):  # a concurrent call recorded it first
                    await self._conclude(found, rank, principal.user, role, "insufficient", notes)
        return gateway_pb2.RecordAnalysisResponse(
            analysis=gateway_pb2.ANALYSIS_SUFFICIENT if sufficient else gateway_pb2.ANALYSIS_INSUFFICIENT
        )

    async def _require_photos_shown(self, reviewer: str, found: SearchFile, rank: int) -> None:
        """Refused unless the faces to compare are still stored and this reviewer has been shown
        them: the candidate's photo, and the probe when the search kept it (a policy may keep none,
        and then the probe is compared from the case file)."""
        kind, key = found.photo_of(rank)
        probe_kept = bool(found.details.get("probe_retained"))
        if not key or await self._photos.header(kind, key) is None:
            raise PreconditionFailed(
                f"candidate {rank}'s photo is no longer stored; there is nothing to compare the probe with",
                rule=Rule.REVIEW,
            )
        if probe_kept and await self._photos.header("probe", found.search_id) is None:
            raise PreconditionFailed(
                "the probe is no longer kept; there is nothing to compare the candidate with", rule=Rule.REVIEW
            )
        needed = {rank, 0} if probe_kept else {rank}
        # The views may have gone through another gateway replica: if this one's own events do
        # not show them, read again once the chain holds everything on the stream.
        for everyones in (False, True):
            views = await self._reader.records(
                on_behalf_of=reviewer,
                kinds=["photo.viewed"],
                case_number=found.case_number,
                actor=reviewer,
                everyones=everyones,
            )
            shown = {
                int(details.get("rank", -1))
                for details in (json.loads(view.event.details_json or "{}") for view in views)
                if details.get("search_id") == found.search_id
            }
            if needed <= shown:
                return
        what = "the probe and candidate" if probe_kept else "candidate"
        raise PreconditionFailed(
            f"look at {what} {rank} first: a decision is recorded only after both photos were shown to "
            "you (the review desk shows them; `candor review show --photos DIR` saves them)",
            rule=Rule.REVIEW,
        )

    def _reviewing_role(self, principal: Principal, found: SearchFile, rank: int) -> str:
        """The capacity the caller reviews in ("reviewer" or "supervisor"), or why they may not."""
        if principal.user == found.searched_by:
            raise PolicyViolation("the searcher may not review their own search", rule=Rule.OWN_SEARCH)
        if principal.user in found.reviewers(rank):
            raise PreconditionFailed(f"{principal.user} has already reviewed this candidate", rule=Rule.REVIEW)
        status = found.status(rank)
        if status == gateway_pb2.CANDIDATE_STATUS_PENDING and "reviewer" in principal.roles:
            return "reviewer"
        if status == gateway_pb2.CANDIDATE_STATUS_DISPUTED and "supervisor" in principal.roles:
            return "supervisor"
        waits = {
            gateway_pb2.CANDIDATE_STATUS_PENDING: "waits for reviewers",
            gateway_pb2.CANDIDATE_STATUS_DISPUTED: "is disputed and waits for a supervisor",
        }.get(status, "is already decided")
        raise PreconditionFailed(f"candidate {rank} of search {found.search_id} {waits}", rule=Rule.REVIEW)

    async def _record_outcome(self, search_id: str, rank: int, reviewer: str, submission: str) -> int:
        """Read the candidate back (with every review stored so far), record its outcome once it
        has one, and return its status.

        Refused when the chain holds another call's decision by the same reviewer: of calls made
        at once, through any number of gateways, only the one whose event was stored stands.
        """
        found = await self._search_file(search_id, reviewer)
        status = await self._publish_outcome(found, rank)
        mine = next((r for r in found.reviews.get(rank, []) if r.reviewer == reviewer), None)
        if mine is None or mine.submission != submission:
            error = PreconditionFailed(f"{reviewer} has already reviewed this candidate", rule=Rule.REVIEW)
            await audit_refusal(
                self._audit, "review", error, reviewer, case_number=found.case_number, purpose=found.purpose,
                search_id=search_id,
            )  # fmt: skip
            raise error
        return status

    async def _publish_outcome(self, found: SearchFile, rank: int) -> int:
        """The candidate's status, its outcome recorded when it has one (one event id per outcome,
        so however many calls record it, the chain holds it once)."""
        status = found.status(rank)
        kind = OUTCOME_KINDS.get(status)
        if kind is None:
            return status
        reviews = found.reviews.get(rank, [])
        details: dict[str, Any] = {
            "search_id": found.search_id,
            "rank": rank,
            "subject_id": found.candidate(rank)["subject_id"],
            "reviewers": [r.reviewer for r in reviews if r.role == "reviewer"],
            "settled_by": next((r.reviewer for r in reviews if r.role == "supervisor"), None),
        }
        if found.known_answer is not None:
            # A test's outcome is scored, never a lead: its own kind, the outcome a detail.
            details.update(outcome=kind.removeprefix("review."), answer=found.known_answer)
            kind = SCORED
        await self._audit.publish(
            kind,
            event_id=f"{found.search_id}/{rank}/{kind}/{details.get('outcome', '')}".rstrip("/"),
            actor=reviews[-1].reviewer,
            case_number=found.case_number,
            purpose=found.purpose,
            details=details,
        )
        return status

    def _waiting_for(self, principal: Principal, found: SearchFile) -> bool:
        if principal.user == found.searched_by:
            return False
        for candidate in found.candidates:
            rank = candidate["rank"]
            if principal.user in found.reviewers(rank):
                continue
            status = found.status(rank)
            if status == gateway_pb2.CANDIDATE_STATUS_PENDING and "reviewer" in principal.roles:
                return True
            if status == gateway_pb2.CANDIDATE_STATUS_DISPUTED and "supervisor" in principal.roles:
                return True
        return False

    async def _probe_for(self, principal: Principal, found: SearchFile) -> bytes:
        """The retained probe, for those who compare it with the candidates."""
        if not principal.roles & {"reviewer", "supervisor"} or principal.user == found.searched_by:
            return b""
        kept = await self._photos.get("probe", found.search_id)
        return kept.image if kept else b""

    async def get_search_photo(self, principal: Principal, search_id: str, rank: int) -> gateway_pb2.Photo:
        """The probe (rank 0) or a candidate's enrolled photo, for someone who may judge or
        oversee the search; every view is audited, and so is every refusal."""
        found: SearchFile | None = None
        try:
            require(principal, Permission.GET_SEARCH_PHOTO)
            if rank < 0:
                raise InvalidInput("rank must be 0 (the probe) or a candidate's rank")
            found = await self._search_file(search_id, principal.user)
            if principal.user == found.searched_by:
                raise PolicyViolation(
                    "the searcher does not review the faces of their own search", rule=Rule.OWN_SEARCH
                )
            if rank > 0:
                self._require_analysis(principal, found)
            rank = self.true_rank(principal, found, rank)
            kind, key = found.photo_of(rank)
            photo = await self._photos.get(kind, key) if key else None
            if photo is None:
                what = "the probe is not kept" if rank == 0 else f"candidate {rank}'s photo is not stored"
                raise NotFound(f"search {search_id}: {what}")
        except CandorError as error:
            await self._refused("photo.view", error, principal, found)
            raise
        candidate = found.candidate(rank) if rank else {}
        # An imported photo's box was not known when it was stored, and a photo stored before eyes
        # were kept has none: its face is found now (in a group photo, the one of the stored box).
        box, eyes = photo.header.box(), photo.header.eye_points()
        if box is None or not eyes:
            located = await self._locate(photo.image, box)
            if located is not None:
                box, eyes = box or located.box, eyes or list(located.eyes)
        await self._audit.publish(
            "photo.viewed",
            actor=principal.user,
            case_number=found.case_number,
            purpose=found.purpose,
            details={
                "search_id": search_id,
                "rank": rank,
                "photo": "probe" if rank == 0 else "candidate",
                "record_id": candidate.get("record_id"),
                "subject_id": candidate.get("subject_id"),
                "sha256": photo.header.sha256,
            },
        )
        return photo.message(box, search_id, eyes)

    async def get_case(self, principal: Principal, case_number: str) -> gateway_pb2.CaseView:
        """A case's searches with their whole review trails; the look is audited."""
        try:
            require(principal, Permission.GET_CASE)
            if not case_number.strip() or len(case_number) > MAX_CASE_CHARS or not is_printable(case_number):
                raise InvalidInput(f"a case number is 1 to {MAX_CASE_CHARS} printable characters")
            records = await self._reader.records(
                on_behalf_of=principal.user, kinds=[SEARCHED, SEEDED, SUBMITTED, ANALYSED], case_number=case_number
            )
            searches = fold(records, self._policy.current.reviews.needed)
        except CandorError as error:
            await audit_refusal(self._audit, "case.view", error, principal.user, case_number=case_number)
            raise
        await self._audit.publish(
            "case.viewed", actor=principal.user, case_number=case_number, details={"searches": list(searches)}
        )
        return gateway_pb2.CaseView(
            case_number=case_number, searches=[self._view(principal, found) for found in searches.values()]
        )

    def _must_analyse(self, principal: Principal, found: SearchFile) -> bool:
        """Whether the caller compares this search's faces blind (a reviewer, not its searcher,
        not a supervisor or auditor, who see every review) and has not yet recorded their analysis
        of the probe: ACE-V's independent examinations are the reviewers'."""
        blind_reviewer = "reviewer" in principal.roles and not principal.roles & FULL_VIEW_ROLES
        return blind_reviewer and principal.user != found.searched_by and principal.user not in found.analyses

    def _score_blind(self, principal: Principal, found: SearchFile) -> bool:
        """Whether the caller sees this search score-blind: a reviewer (who is not also a
        supervisor or auditor), when the policy hides scores and order from reviewers."""
        return (
            self._policy.current.reviews.score_blind
            and "reviewer" in principal.roles
            and not principal.roles & FULL_VIEW_ROLES
            and principal.user != found.searched_by
        )

    def true_rank(self, principal: Principal, found: SearchFile, rank: int) -> int:
        """The candidate's true rank for a rank the caller names (their own order, score-blind)."""
        if rank <= 0 or not self._score_blind(principal, found):
            return rank
        ranks = [candidate["rank"] for candidate in found.candidates]
        return self._blind.true_rank(found.search_id, principal.user, ranks, rank)

    def _view(self, principal: Principal, found: SearchFile, probe: bytes = b"") -> gateway_pb2.SearchReview:
        searcher = principal.user == found.searched_by
        full = bool(principal.roles & FULL_VIEW_ROLES) or searcher
        blind = self._score_blind(principal, found)
        model = found.details.get("model", {})
        analysis = found.analyses.get(principal.user)
        view = gateway_pb2.SearchReview(
            search_id=found.search_id,
            case_number=found.case_number,
            purpose=found.purpose,
            searched_by=found.searched_by,
            searched_at=found.searched_at,
            model=common_pb2.ModelRef(
                id=model.get("id", ""),
                version=model.get("version", ""),
                metric=model.get("metric", ""),
                threshold=found.details.get("threshold", 0.0),
                calibration_id=found.details.get("calibration_id") or "",
            ),
            reviews_needed=found.needed,
            authorisation_reference=found.details.get("authorisation_reference", ""),
            probe_sha256=found.details.get("probe_sha256", ""),
            probe_image=probe,
            analysis=gateway_pb2.ANALYSIS_UNSPECIFIED
            if analysis is None
            else gateway_pb2.ANALYSIS_SUFFICIENT
            if analysis
            else gateway_pb2.ANALYSIS_INSUFFICIENT,
            candidate_count=len(found.candidates),
            score_blind=blind,
            proficiency_test=found.known_answer is not None and bool(principal.roles & FULL_VIEW_ROLES),
        )
        quality = found.details.get("probe_quality") or {}
        view.probe_quality.face_size_px = int(quality.get("face_size_px") or 0)
        view.probe_quality.blur = float(quality.get("blur") or 0.0)
        view.probe_quality.turn = float(quality.get("turn") or 0.0)
        if self._must_analyse(principal, found):
            return view  # ACE-V: no candidate is shown before the probe's analysis is recorded
        candidates = found.candidates
        if blind:
            order = self._blind.order(found.search_id, principal.user, [c["rank"] for c in candidates])
            candidates = sorted(candidates, key=lambda candidate: order.index(candidate["rank"]))
        for shown, candidate in enumerate(candidates, start=1):
            rank = candidate["rank"]
            status = found.status(rank)
            reviews = [r for r in found.reviews.get(rank, []) if full or r.reviewer == principal.user]
            if searcher and status not in DECIDED:
                # Whatever other roles they hold, the searcher learns nothing until the outcome:
                # no interim decision, no reviewer's name, no dispute.
                status, reviews = gateway_pb2.CANDIDATE_STATUS_PENDING, []
            view.candidates.append(
                gateway_pb2.ReviewedCandidate(
                    candidate=common_pb2.Candidate(
                        rank=shown if blind else rank,
                        subject_id=candidate["subject_id"],
                        distance=0.0 if blind else candidate["distance"],
                        record_id=candidate.get("record_id", ""),
                        model_id=model.get("id", ""),
                        calibrated_fmr=None if blind else candidate.get("calibrated_fmr"),
                    ),
                    status=status if full else gateway_pb2.CANDIDATE_STATUS_UNSPECIFIED,
                    reviews=[
                        gateway_pb2.Review(
                            reviewer=r.reviewer,
                            role=r.role,
                            decision=DECISION_VALUES[r.decision],
                            notes=r.notes,
                            decided_at=r.decided_at,
                            features=list(r.features),
                        )
                        for r in reviews
                    ],
                )
            )
        return view

    async def _refused(
        self, action: str, error: CandorError, principal: Principal, found: SearchFile | None = None
    ) -> None:
        await audit_refusal(
            self._audit,
            action,
            error,
            principal.user,
            case_number=found.case_number if found else "",
            purpose=found.purpose if found else "",
            **({"search_id": found.search_id} if found else {}),
        )


def review_decision(request: gateway_pb2.SubmitReviewRequest) -> tuple[str, tuple[str, ...]]:
    """The conclusion (its record name: "confirm", "probably-same", ...) and the features of a
    well-formed review request; InvalidInput otherwise."""
    if request.decision not in DECISIONS:
        raise InvalidInput("decision must be one of the graded conclusions (DECISION_CONFIRM to DECISION_INSUFFICIENT)")
    decision = DECISIONS[request.decision]
    unknown = sorted(set(request.features) - set(conclusions.FEATURES))
    if unknown:
        raise InvalidInput(f"features must come from the feature list; unknown: {', '.join(unknown)[:200]}")
    if decision in conclusions.NEED_FEATURES and not request.features:
        raise InvalidInput(f"a {conclusions.WORDS[decision]} conclusion names the facial features it rests on")
    if len(request.notes) > MAX_NOTES:
        raise InvalidInput(f"notes exceed {MAX_NOTES} characters")
    if not is_printable(re.sub(r"\r?\n|\t", " ", request.notes)):
        raise InvalidInput("notes may hold line breaks and tabs but no other control or formatting characters")
    if request.rank < 1:
        raise InvalidInput("rank must be 1 or more")
    return decision, tuple(dict.fromkeys(request.features))


def _search_of(record: audit_pb2.AuditRecord) -> str:
    """The search a search's or a review's record is about (a review names its search; the
    search is recorded before any review of it)."""
    if record.event.kind in (SEARCHED, SEEDED):
        return record.event.event_id
    return str(json.loads(record.event.details_json or "{}").get("search_id", ""))

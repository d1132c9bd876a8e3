"""A search as the audit chain records it: the search (or a supervisor's proficiency test), each
reviewer's analysis of its probe, and every review of its candidates, folded from the chain's
records alone; and the status each candidate's reviews give it.

The rules of the status: the first ``needed`` reviewers' conclusions decide, unless a supervisor
settled a dispute; only "same person" counts towards a lead; a "probably same" among them sends the
candidate to a supervisor; none of either rejects it (not a lead).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from candor.audit.v1 import audit_pb2
from candor.gateway.v1 import gateway_pb2
from candor_gateway.photos import Kind
from candor_gateway.proficiency import SEEDED
from candor_kit import NotFound, conclusions

SEARCHED = "search.completed"
SUBMITTED = "review.submitted"
ANALYSED = "review.analysed"
REJECTED = gateway_pb2.CANDIDATE_STATUS_REJECTED
#: Conclusions that, among the first reviewers', leave a candidate for a supervisor rather than
#: rejected: support short of a conclusion.
LEANING_SAME = frozenset({"probably-same"})


@dataclass(frozen=True)
class Decided:
    """One review of one candidate."""

    review_id: str
    reviewer: str
    role: str
    decision: str
    notes: str
    decided_at: Timestamp
    #: The id of the call that recorded it, so that call (and only it) knows its decision stands.
    submission: str = ""
    #: The facial features the reviewer relied on.
    features: tuple[str, ...] = ()


@dataclass
class SearchFile:
    """A search as the chain records it, with the reviews of its candidates so far."""

    search_id: str
    case_number: str
    purpose: str
    searched_by: str
    searched_at: Timestamp
    details: dict[str, Any]
    #: Confirmations that make a lead: the policy's number when the search was made.
    needed: int
    reviews: dict[int, list[Decided]] = field(default_factory=dict)
    #: Each reviewer's analysis of the probe: whether it is sufficient to compare (the first stands).
    analyses: dict[str, bool] = field(default_factory=dict)
    #: A proficiency test's answer ("same" or "different"); None for a real search.
    known_answer: str | None = None

    def photo_of(self, rank: int) -> tuple[Kind, str]:
        """Where the store keeps the probe (rank 0) or a candidate's photo."""
        if rank == 0:
            return "probe", self.search_id
        if self.known_answer is not None:
            return "exemplar", self.search_id
        return "gallery", self.candidate(rank).get("record_id", "")

    @property
    def candidates(self) -> list[dict[str, Any]]:
        """The candidates shown, best first."""
        return list(self.details.get("candidates", []))

    def candidate(self, rank: int) -> dict[str, Any]:
        """The candidate at ``rank``; NotFound when the search showed none there."""
        for candidate in self.candidates:
            if candidate["rank"] == rank:
                return candidate
        raise NotFound(f"search {self.search_id} has no candidate at rank {rank}")

    def status(self, rank: int) -> int:
        """A candidate's CandidateStatus from its reviews: the first ``needed`` reviewers' decisions
        decide, unless a supervisor settled a dispute."""
        reviews = self.reviews.get(rank, [])
        settled = [r for r in reviews if r.role == "supervisor"]
        if settled:
            lead = settled[0].decision == conclusions.SUPPORTS_LEAD
            return gateway_pb2.CANDIDATE_STATUS_LEAD if lead else REJECTED
        first = [r.decision for r in reviews if r.role == "reviewer"][: self.needed]
        if len(first) < self.needed:
            return gateway_pb2.CANDIDATE_STATUS_PENDING
        if set(first) == {conclusions.SUPPORTS_LEAD}:
            return gateway_pb2.CANDIDATE_STATUS_LEAD
        if not set(first) & (LEANING_SAME | {conclusions.SUPPORTS_LEAD}):
            return REJECTED
        return gateway_pb2.CANDIDATE_STATUS_DISPUTED

    def reviewers(self, rank: int) -> set[str]:
        """Who has reviewed the candidate at ``rank``."""
        return {r.reviewer for r in self.reviews.get(rank, [])}

    def decided_at(self, window_days: int, now: dt.datetime) -> dt.datetime | None:
        """When the last of the candidates was decided (when the search was made, if it showed
        none); when its review window closed, if that has passed with a candidate undecided; None
        while one still waits within the window."""
        searched = self.searched_at.ToDatetime(tzinfo=dt.UTC)
        decided = [searched]
        for candidate in self.candidates:
            rank = candidate["rank"]
            if self.status(rank) in (gateway_pb2.CANDIDATE_STATUS_PENDING, gateway_pb2.CANDIDATE_STATUS_DISPUTED):
                closed = searched + dt.timedelta(days=window_days)
                return closed if closed <= now else None
            decided.append(self.reviews[rank][-1].decided_at.ToDatetime(tzinfo=dt.UTC))
        return max(decided)


def fold(records: Iterable[audit_pb2.AuditRecord], needed: int) -> dict[str, SearchFile]:
    """The searches and their reviews, from ``search.completed``, ``review.submitted`` and
    ``review.analysed`` records;
    ``needed`` serves searches recorded before the policy named its number of reviews."""
    searches: dict[str, SearchFile] = {}
    for record in records:
        event = record.event
        details = json.loads(event.details_json or "{}")
        if event.kind in (SEARCHED, SEEDED):
            # A proficiency test shows the searcher it was seeded under; its actor is the supervisor.
            seeded = event.kind == SEEDED
            searches[event.event_id] = SearchFile(
                event.event_id,
                event.case_number,
                event.purpose,
                details.get("shown_searcher", "") if seeded else event.actor,
                event.occurred_at,
                details,
                int(details.get("reviews_needed") or needed),
                known_answer=details.get("answer") if seeded else None,
            )
        elif event.kind == SUBMITTED and details.get("search_id") in searches:
            reviews = searches[details["search_id"]].reviews.setdefault(int(details["rank"]), [])
            # One reviewer counts once: their first decision stands, whatever else the chain holds.
            if all(review.reviewer != event.actor for review in reviews):
                reviews.append(
                    Decided(
                        event.event_id,
                        event.actor,
                        details["role"],
                        details["decision"],
                        details.get("notes", ""),
                        event.occurred_at,
                        details.get("submission", ""),
                        tuple(details.get("features") or ()),
                    )
                )
        elif event.kind == ANALYSED and details.get("search_id") in searches:
            searches[details["search_id"]].analyses.setdefault(event.actor, bool(details.get("sufficient")))
    return searches


def review_event_id(search_id: str, rank: int, reviewer: str) -> str:
    """The one event id a reviewer's decision on a candidate can have: the stream stores it once
    (its message id) and the chain once (its id, unique for its kind), however many gateways are asked at once."""
    return f"{search_id}/{rank}/review/{_who(reviewer)}"


def analysis_event_id(search_id: str, reviewer: str) -> str:
    """The one event id a reviewer's analysis of a search's probe can have (stored once, likewise)."""
    return f"{search_id}/analysis/{_who(reviewer)}"


def _who(reviewer: str) -> str:
    """A reviewer's name as an event id carries it: fixed length, no characters of the name."""
    return hashlib.sha256(reviewer.encode("utf-8")).hexdigest()[:32]

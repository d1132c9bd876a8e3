"""The review queue's filters decide from the chain's reviews alone: "partly reviewed" is the
caller's own unfinished work (never another reviewer's progress, which blind review hides), and
"disputed" is a dispute waiting for this supervisor."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from candor.gateway.v1 import gateway_pb2
from candor_gateway.review_queue import pending_filter
from candor_gateway.search_file import Decided, SearchFile
from candor_kit.tokens import Principal


def search(reviews: dict[int, list[tuple[str, str, str]]]) -> SearchFile:
    """A two-candidate search with the given (reviewer, role, decision) reviews by rank."""
    found = SearchFile(
        search_id="s1", case_number="C-1", purpose="investigation", searched_by="ivy",
        searched_at=Timestamp(seconds=1_800_000_000),
        details={"candidates": [{"rank": 1, "subject_id": "a"}, {"rank": 2, "subject_id": "b"}]}, needed=2,
    )  # fmt: skip
    for rank, decided in reviews.items():
        found.reviews[rank] = [
            Decided(f"r{rank}{who}", who, role, what, "", Timestamp()) for who, role, what in decided
        ]
    return found


RITA = Principal(user="rita", roles=frozenset({"reviewer"}))
SUE = Principal(user="sue", roles=frozenset({"supervisor"}))


def test_partly_reviewed_is_the_callers_own_unfinished_work() -> None:
    partly = pending_filter(gateway_pb2.ListPendingReviewsRequest(partly_reviewed_only=True))
    assert partly(RITA, search({1: [("rita", "reviewer", "confirm")]}))
    # Another reviewer's progress does not make it "partly reviewed" for Rita: reviews are blind.
    assert not partly(RITA, search({1: [("rob", "reviewer", "confirm")]}))
    assert not partly(RITA, search({}))


def test_disputed_only_is_a_dispute_this_supervisor_may_settle() -> None:
    disputed = pending_filter(gateway_pb2.ListPendingReviewsRequest(disputed_only=True))
    split = {1: [("rita", "reviewer", "confirm"), ("rob", "reviewer", "reject")]}
    assert disputed(SUE, search(split))
    assert not disputed(RITA, search(split))  # a reviewer settles no dispute
    assert not disputed(SUE, search({1: [("rita", "reviewer", "confirm")]}))

"""Proficiency tests through the running services: a supervisor seeds known-answer comparisons
that reach reviewers' queues looking like any search, are reviewed through the same calls, are
scored and never become leads, and the oversight report shows each reviewer's accuracy."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc
import pytest

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_cli.report import EVIDENCE_KINDS, compute
from tests.integration.conftest import InProcessStack
from tests.integration.test_governance import RITA, ROB, SUE, look_at_both
from tests.integration.test_search_flow import audit_records
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


def seeding(samples: Path, candidate: str, same: bool, case: str) -> gateway_pb2.SeedProficiencyTestRequest:
    return gateway_pb2.SeedProficiencyTestRequest(
        probe_image=(samples / "obama2.jpg").read_bytes(),
        candidate_image=(samples / candidate).read_bytes(),
        same_person=same,
        case_number=case,
        purpose="investigation",
        shown_searcher="ivy",
        shown_subject_id="B-19231",
        source="labelled pairs, line 7",
    )


async def test_a_seeded_test_looks_like_work_is_scored_never_a_lead_and_the_report_scores_reviewers(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    # Only a supervisor seeds, and never in their own name.
    with pytest.raises(grpc.aio.AioRpcError) as not_theirs:
        await gateway.SeedProficiencyTest(seeding(samples, "obama.jpg", True, "2026-PT-0042"), metadata=RITA)
    assert not_theirs.value.code() == grpc.StatusCode.PERMISSION_DENIED
    own = seeding(samples, "obama.jpg", True, "2026-PT-0042")
    own.shown_searcher = "sue"
    with pytest.raises(grpc.aio.AioRpcError) as in_own_name:
        await gateway.SeedProficiencyTest(own, metadata=SUE)
    assert in_own_name.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    same = await gateway.SeedProficiencyTest(seeding(samples, "obama.jpg", True, "2026-PT-0042"), metadata=SUE)
    other = await gateway.SeedProficiencyTest(seeding(samples, "biden.jpg", False, "2026-PT-0043"), metadata=SUE)
    assert 0 < same.distance < other.distance  # the model's real distances

    # In Rita's queue like any search: its shown searcher, case and subject, no mark of a test.
    pending = await gateway.ListPendingReviews(
        gateway_pb2.ListPendingReviewsRequest(case_prefix="2026-PT-"), metadata=RITA
    )
    assert {s.search_id for s in pending.searches} == {same.search_id, other.search_id}
    shown = next(s for s in pending.searches if s.search_id == same.search_id)
    assert (shown.searched_by, shown.purpose, shown.proficiency_test) == ("ivy", "investigation", False)
    for reviewer in (RITA, ROB):
        await look_at_both(gateway, reviewer, same.search_id, 1)
        seen = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=same.search_id), metadata=reviewer)
        assert seen.candidates[0].candidate.subject_id == "B-19231"
        assert abs(seen.candidates[0].candidate.distance - same.distance) < 1e-5
        photo = await gateway.GetSearchPhoto(
            gateway_pb2.GetSearchPhotoRequest(search_id=same.search_id, rank=1), metadata=reviewer
        )
        assert photo.sha256 == hashlib.sha256((samples / "obama.jpg").read_bytes()).hexdigest()
        request = gateway_pb2.SubmitReviewRequest(
            search_id=same.search_id, rank=1, decision=gateway_pb2.DECISION_CONFIRM, features=["ears"]
        )
        await gateway.SubmitReview(request, metadata=reviewer)
    # Rita calls the different pair the same person (a false same); Rob gets it right.
    for reviewer, decision, notes in (
        (RITA, gateway_pb2.DECISION_CONFIRM, ""),
        (ROB, gateway_pb2.DECISION_REJECT, "no"),
    ):
        await look_at_both(gateway, reviewer, other.search_id, 1)
        request = gateway_pb2.SubmitReviewRequest(
            search_id=other.search_id, rank=1, decision=decision, notes=notes, features=["nose"]
        )
        await gateway.SubmitReview(request, metadata=reviewer)
    # A supervisor sees it is a test; it is scored, never a lead.
    overseen = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=same.search_id), metadata=SUE)
    assert overseen.proficiency_test

    async def scored() -> bool:
        records = await audit_records(stack, case_number="2026-PT-0042")
        kinds = [r.event.kind for r in records]
        return "proficiency.scored" in kinds and not {"review.confirmed", "review.rejected"} & set(kinds)

    await eventually(scored)

    everything = await audit_records(stack, limit=10000)
    evidence = [r for r in everything if r.event.kind in EVIDENCE_KINDS]
    report = compute(everything, ("2026-01-01", "2026-12-31"), evidence)
    scores = {score.reviewer: score for score in report.proficiency}
    assert (scores["rita"].tests, scores["rita"].accuracy.count, scores["rita"].false_same) == (2, 1, 1)
    assert (scores["rob"].tests, scores["rob"].accuracy.count, scores["rob"].false_same) == (2, 2, 0)
    assert str(scores["rob"].accuracy).startswith("100.0% [15.8%, 100.0%] (2/2)")
    assert report.reviews.get("confirmed", 0) == sum(
        1 for r in everything if r.event.kind == "review.confirmed"
    )  # the tests add nothing to the review outcomes


async def test_a_seeding_sent_again_or_at_once_with_its_request_id_seeds_one_test(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    """A supervisor's retry (a lost answer, a double click, gRPC's own retry of an unavailable
    gateway) seeds the test once: one search in the queues, one ``proficiency.seeded`` record."""
    request = seeding(samples, "obama.jpg", True, "2026-PX-0077")
    request.client_request_id = "seed-2026-PX-0077"
    answers = await asyncio.gather(*(gateway.SeedProficiencyTest(request, metadata=SUE) for _ in range(5)))
    answers.append(await gateway.SeedProficiencyTest(request, metadata=SUE))
    assert len({answer.search_id for answer in answers}) == 1, "one seeding gave several tests"

    changed = seeding(samples, "biden.jpg", False, "2026-PX-0077")
    changed.client_request_id = "seed-2026-PX-0077"
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await gateway.SeedProficiencyTest(changed, metadata=SUE)
    assert reused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # A later seeding, once on the chain, means every earlier one is (the chain takes them in order).
    later = await gateway.SeedProficiencyTest(seeding(samples, "obama.jpg", True, "2026-PX-0078"), metadata=SUE)

    async def later_recorded() -> bool:
        return any(r.event.event_id == later.search_id for r in await audit_records(stack, case_number="2026-PX-0078"))

    await eventually(later_recorded)
    seeded = [r for r in await audit_records(stack, case_number="2026-PX-0077") if r.event.kind == "proficiency.seeded"]
    assert [r.event.event_id for r in seeded] == [answers[0].search_id], f"seeded {len(seeded)} times, not once"
    pending = await gateway.ListPendingReviews(
        gateway_pb2.ListPendingReviewsRequest(case_prefix="2026-PX-0077"), metadata=RITA
    )
    assert [s.search_id for s in pending.searches] == [answers[0].search_id]

"""ACE-V through the running services: the probe's analysis comes before any candidate, conclusions
are graded and name their features, only "same person" makes a lead, an insufficient probe ends a
reviewer's review, and score-blind review hides distances and order without losing the true rank
in the audit chain. Concurrent analyses are recorded once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.integration.conftest import InProcessStack
from tests.integration.test_governance import (
    ENROLLER,
    INVESTIGATOR,
    RITA,
    ROB,
    SUE,
    look_at_both,
    policy_with,
    probe_request,
    restore_policy,  # noqa: F401 - a fixture
    status_seen_by,
)
from tests.integration.test_search_flow import audit_records
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
#: The same face enrolled under several subjects: a search shows each as a candidate.
TWINS = ("twin-a", "twin-b", "twin-c", "twin-d")


@pytest.fixture(scope="module")
async def twins(gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path) -> AsyncIterator[None]:
    """The twins enrolled for this module's tests, and deleted after them: the other modules share
    the gallery and expect obama first."""
    for subject in ("obama", *TWINS):
        request = gateway_pb2.EnrollRequest(image=(samples / "obama.jpg").read_bytes(), subject_id=subject)
        await gateway.Enroll(request, metadata=ENROLLER)
    yield
    for subject in TWINS:
        deleting = gateway_pb2.DeleteSubjectRequest(subject_id=subject, reason="test twins removed")
        await gateway.DeleteSubject(deleting, metadata=ENROLLER)


async def search_as(gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, metadata: object, case: str) -> str:
    """A search of obama2.jpg, whose candidates are obama and the twins."""
    found = await gateway.Search(probe_request(samples, case), metadata=metadata)
    assert len(found.candidates) == 1 + len(TWINS)
    return found.search_id


async def conclude(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    metadata: object,
    search_id: str,
    decision: int,
    notes: str = "",
    features: tuple[str, ...] = ("ears",),
    rank: int = 1,
) -> gateway_pb2.SubmitReviewResponse:
    await look_at_both(gateway, metadata, search_id, rank)
    request = gateway_pb2.SubmitReviewRequest(
        search_id=search_id, rank=rank, decision=decision, notes=notes, features=list(features)
    )
    return await gateway.SubmitReview(request, metadata=metadata)


async def test_graded_conclusions_need_their_features_and_reasons_and_only_same_person_makes_a_lead(
    gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, twins: None
) -> None:
    search_id = await search_as(gateway, samples, INVESTIGATOR, "ACE-1")
    for decision, notes, features, said in (
        (gateway_pb2.DECISION_CONFIRM, "", (), "names the facial features it rests on"),
        (gateway_pb2.DECISION_INCONCLUSIVE, "", (), "notes are required for a inconclusive conclusion"),
        (gateway_pb2.DECISION_CONFIRM, "", ("a third ear",), "unknown: a third ear"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await conclude(gateway, RITA, search_id, decision, notes, features)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and said in (refused.value.details() or "")

    # What each distance meant on the calibration set: the FMR read off its curve (the stack is calibrated).
    shown = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=search_id), metadata=SUE)
    assert all(c.candidate.HasField("calibrated_fmr") for c in shown.candidates)
    assert all(0.0 <= c.candidate.calibrated_fmr <= 0.05 for c in shown.candidates)

    # Same person and probably the same: not a lead, a dispute for a supervisor to settle.
    await conclude(gateway, RITA, search_id, gateway_pb2.DECISION_CONFIRM, features=("ears", "eyebrows"))
    await conclude(gateway, ROB, search_id, gateway_pb2.DECISION_PROBABLY_SAME, "the light hides the ears")
    assert await status_seen_by(gateway, SUE, search_id) == gateway_pb2.CANDIDATE_STATUS_DISPUTED
    seen = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=search_id), metadata=SUE)
    assert [(r.decision, list(r.features)) for r in seen.candidates[0].reviews] == [
        (gateway_pb2.DECISION_CONFIRM, ["ears", "eyebrows"]),
        (gateway_pb2.DECISION_PROBABLY_SAME, ["ears"]),
    ]

    # Inconclusive and different: no lead, and nothing left to settle.
    other = await search_as(gateway, samples, INVESTIGATOR, "ACE-2")
    await conclude(gateway, RITA, other, gateway_pb2.DECISION_INCONCLUSIVE, "too dark", features=())
    await conclude(gateway, ROB, other, gateway_pb2.DECISION_REJECT, "ears differ", ("ears",))
    assert await status_seen_by(gateway, SUE, other) == gateway_pb2.CANDIDATE_STATUS_REJECTED


async def test_an_insufficient_probe_concludes_the_reviewers_review_of_every_candidate(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, twins: None
) -> None:
    search_id = await search_as(gateway, samples, INVESTIGATOR, "ACE-3")
    count = (await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=search_id), metadata=RITA)).candidate_count
    assert count >= 2
    with pytest.raises(grpc.aio.AioRpcError) as no_reason:
        await gateway.RecordAnalysis(gateway_pb2.RecordAnalysisRequest(search_id=search_id), metadata=RITA)
    assert no_reason.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for reviewer in (RITA, ROB):
        done = await gateway.RecordAnalysis(
            gateway_pb2.RecordAnalysisRequest(search_id=search_id, sufficient=False, notes="motion blur"),
            metadata=reviewer,
        )
        assert done.analysis == gateway_pb2.ANALYSIS_INSUFFICIENT
        pending = await gateway.ListPendingReviews(gateway_pb2.ListPendingReviewsRequest(), metadata=reviewer)
        assert search_id not in [s.search_id for s in pending.searches]
    # Both found it insufficient: every candidate is closed, none a lead.
    seen = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=search_id), metadata=SUE)
    assert [c.status for c in seen.candidates] == [gateway_pb2.CANDIDATE_STATUS_REJECTED] * count
    assert {r.decision for c in seen.candidates for r in c.reviews} == {gateway_pb2.DECISION_INSUFFICIENT}
    # A comparison after an insufficient analysis is refused, and says why.
    with pytest.raises(grpc.aio.AioRpcError) as closed:
        await gateway.GetSearchPhoto(gateway_pb2.GetSearchPhotoRequest(search_id=search_id, rank=1), metadata=RITA)
    assert "your review of this search is complete" in (closed.value.details() or "")

    async def analysed_once_each() -> bool:
        records = await audit_records(stack, case_number="ACE-3", kinds=["review.analysed"])
        return sorted(r.event.actor for r in records) == ["rita", "rob"]

    await eventually(analysed_once_each)


async def test_concurrent_analyses_by_one_reviewer_are_recorded_once(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, twins: None
) -> None:
    search_id = await search_as(gateway, samples, INVESTIGATOR, "ACE-4")
    calls = [
        gateway.RecordAnalysis(
            gateway_pb2.RecordAnalysisRequest(
                search_id=search_id, sufficient=index % 2 == 0, notes="" if index % 2 == 0 else "blur"
            ),
            metadata=RITA,
        )
        for index in range(8)
    ]
    answers = await asyncio.gather(*calls, return_exceptions=True)
    kept = {a.analysis for a in answers if isinstance(a, gateway_pb2.RecordAnalysisResponse)}
    assert len(kept) == 1  # every call that succeeded reports the one analysis that stands
    for answer in answers:
        if isinstance(answer, grpc.aio.AioRpcError):
            assert answer.code() == grpc.StatusCode.FAILED_PRECONDITION

    async def one_analysis() -> bool:
        records = await audit_records(stack, case_number="ACE-4", kinds=["review.analysed"])
        return len(records) == 1

    await eventually(one_analysis)
    records = await audit_records(stack, case_number="ACE-4", kinds=["review.analysed"])
    stood = json.loads(records[0].event.details_json)["sufficient"]
    assert kept == {gateway_pb2.ANALYSIS_SUFFICIENT if stood else gateway_pb2.ANALYSIS_INSUFFICIENT}


@pytest.mark.usefixtures("restore_policy")
async def test_score_blind_review_hides_distances_and_order_and_the_chain_keeps_the_true_rank(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, twins: None
) -> None:
    await stack.use_policy(policy_with(reviews={"needed": 2, "window_days": 30, "score_blind": True}))
    orders: dict[str, list[list[str]]] = {"rita": [], "rob": []}
    for index in range(3):
        search_id = await search_as(gateway, samples, INVESTIGATOR, f"BLIND-{index}")
        true = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=search_id), metadata=SUE)
        assert not true.score_blind and true.candidates[0].candidate.distance > 0  # supervisors see scores
        for name, reviewer in (("rita", RITA), ("rob", ROB)):
            await look_at_both(gateway, reviewer, search_id, 1)
            seen = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=search_id), metadata=reviewer)
            assert seen.score_blind
            assert [c.candidate.rank for c in seen.candidates] == list(range(1, len(true.candidates) + 1))
            assert all(c.candidate.distance == 0 for c in seen.candidates)
            assert sorted(c.candidate.subject_id for c in seen.candidates) == sorted(
                c.candidate.subject_id for c in true.candidates
            )
            orders[name].append([c.candidate.subject_id for c in seen.candidates])
            # The photo of "their" candidate 2 is that candidate's, and so is the review.
            photo = await gateway.GetSearchPhoto(
                gateway_pb2.GetSearchPhotoRequest(search_id=search_id, rank=2), metadata=reviewer
            )
            assert photo.subject_id == seen.candidates[1].candidate.subject_id
            if index == 0:
                request = gateway_pb2.SubmitReviewRequest(
                    search_id=search_id, rank=2, decision=gateway_pb2.DECISION_REJECT, notes="no", features=["nose"]
                )
                await gateway.SubmitReview(request, metadata=reviewer)
                true_rank = next(
                    c.candidate.rank
                    for c in true.candidates
                    if c.candidate.subject_id == seen.candidates[1].candidate.subject_id
                )

                async def recorded_true_rank(actor: str = name, rank: int = true_rank, sid: str = search_id) -> bool:
                    records = await audit_records(stack, case_number="BLIND-0", kinds=["review.submitted"])
                    ranks = {json.loads(r.event.details_json)["rank"] for r in records if r.event.actor == actor}
                    return ranks == {rank}

                await eventually(recorded_true_rank)
    # Each reviewer's order is their own: across three searches they differ at least once.
    assert orders["rita"] != orders["rob"]

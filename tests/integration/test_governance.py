"""The policy file's rules, its changes, the two-reviewer workflow and probe retention, through the
running services: each refusal names its rule and is audited, and every review step is audited."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import yaml

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_cli.stack import AUDIENCE, LOCAL_ISSUER
from candor_gateway.search_file import review_event_id
from candor_kit.tokens import issue_token, load_private_key
from tests.integration.conftest import POLICY, TOKEN_KEY, InProcessStack, as_user
from tests.integration.cuts import audited, cut_short, deadlines, nothing_left_half_done
from tests.integration.test_search_flow import audit_records
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

INVESTIGATOR = as_user("investigator-token")
ENROLLER = as_user("enroller-token")
RITA, ROB, SUE = as_user("reviewer-a"), as_user("reviewer-b"), as_user("supervisor")
IRIS = as_user("investigating-reviewer")
AUDITOR = as_user("auditor-token")


def policy_with(**changes: object) -> str:
    """The test stack's policy with some top-level entries replaced."""
    document = yaml.safe_load(POLICY)
    document.update(changes)
    return yaml.safe_dump(document)


def fresh_investigator() -> tuple[str, tuple[tuple[str, str]]]:
    """A user no other test has searched as (quotas count per user and day)."""
    user = f"inv-{uuid.uuid4().hex[:8]}"
    token = issue_token(load_private_key(TOKEN_KEY), user, ["investigator"], 600, LOCAL_ISSUER, AUDIENCE)
    return user, (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def restore_policy(stack: InProcessStack) -> AsyncIterator[None]:
    """Put the stack's usual policy back after a test that changed it."""
    yield
    await stack.use_policy(POLICY)


@pytest.fixture(scope="module")
async def gallery(gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path) -> None:
    """obama.jpg enrolled (enrolment is idempotent, so other modules' enrolment does not matter)."""
    request = gateway_pb2.EnrollRequest(image=(samples / "obama.jpg").read_bytes(), subject_id="obama")
    await gateway.Enroll(request, metadata=ENROLLER)


def probe_request(samples: Path, case: str, **fields: object) -> gateway_pb2.SearchRequest:
    image = (samples / "obama2.jpg").read_bytes()
    return gateway_pb2.SearchRequest(probe_image=image, case_number=case, **{"purpose": "investigation", **fields})


async def refusal_rule(stack: InProcessStack, actor: str, case: str, kind: str = "search.refused") -> list[str]:
    """The rules named by ``actor``'s audited refusals in ``case``."""
    records = await audit_records(stack, actor=actor, case_number=case, kinds=[kind])
    return [json.loads(r.event.details_json).get("rule", "") for r in records]


async def test_missing_case_bad_purpose_and_oversized_list_are_refused_naming_their_rule(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    user, metadata = fresh_investigator()
    expected = [
        (probe_request(samples, ""), grpc.StatusCode.INVALID_ARGUMENT, "case_number"),
        (probe_request(samples, "GOV-1", purpose="curiosity"), grpc.StatusCode.PERMISSION_DENIED, "purpose"),
        (probe_request(samples, "GOV-1", max_candidates=21), grpc.StatusCode.PERMISSION_DENIED, "max_candidates"),
    ]
    for request, code, _ in expected:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway.Search(request, metadata=metadata)
        assert refused.value.code() == code

    async def audited() -> bool:
        records = await audit_records(stack, actor=user, kinds=["search.refused"])
        return sorted(json.loads(r.event.details_json)["rule"] for r in records) == sorted(r for *_, r in expected)

    await eventually(audited)


async def test_authorisation_quota_and_probe_quality_rules_refuse_and_are_audited(
    stack: InProcessStack,
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    samples: Path,
    gallery: None,
    restore_policy: None,
) -> None:
    await stack.use_policy(policy_with(authorisation_reference="required", quotas={"searches_per_user_per_day": 2}))
    user, metadata = fresh_investigator()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.Search(probe_request(samples, "GOV-2"), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "authorisation reference" in (refused.value.details() or "")
    # Back to back, so the count depends on reading the chain after this gateway's own writes.
    for _ in range(2):
        found = await gateway.Search(probe_request(samples, "GOV-2", authorisation_reference="W-77"), metadata=metadata)
        assert found.candidates[0].subject_id == "obama"
    with pytest.raises(grpc.aio.AioRpcError) as exhausted:
        await gateway.Search(probe_request(samples, "GOV-2", authorisation_reference="W-77"), metadata=metadata)
    assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "quota of 2 searches" in (exhausted.value.details() or "")

    await stack.use_policy(policy_with(probe_quality={"min_face_px": 2000, "min_blur": 0}))
    with pytest.raises(grpc.aio.AioRpcError) as poor:
        await gateway.Search(probe_request(samples, "GOV-2"), metadata=metadata)
    assert poor.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "the policy needs 2000" in (poor.value.details() or "")

    async def audited() -> bool:
        return await refusal_rule(stack, user, "GOV-2") == ["authorisation_reference", "quota", "probe_quality"]

    await eventually(audited)
    completed = await audit_records(stack, actor=user, kinds=["search.completed"])
    assert [json.loads(r.event.details_json)["authorisation_reference"] for r in completed] == ["W-77", "W-77"]


async def test_a_policy_change_is_audited_with_its_hash_and_a_bad_one_is_refused(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, restore_policy: None
) -> None:
    path = stack.root / "policy.yaml"
    before = {r.event.event_id for r in await audit_records(stack, kinds=["policy.changed", "policy.rejected"])}

    async def new(kind: str) -> list[dict[str, object]]:
        records = await audit_records(stack, kinds=[kind])
        return [json.loads(r.event.details_json) for r in records if r.event.event_id not in before]

    path.write_text(policy_with(purposes=["investigation", "missing-person", "child-exploitation"]))

    async def changed() -> bool:
        return bool(await new("policy.changed"))

    await eventually(changed)
    [change] = await new("policy.changed")
    assert change["sha256"] != change["previous_sha256"]
    assert change["policy"]["purposes"] == ["investigation", "missing-person", "child-exploitation"]
    _user, metadata = fresh_investigator()
    await gateway.Search(probe_request(samples, "GOV-3", purpose="child-exploitation"), metadata=metadata)

    path.write_text(policy_with(candidates={"default": 50, "max": 20}))

    async def rejected() -> bool:
        return bool(await new("policy.rejected"))

    await eventually(rejected)
    [refusal] = await new("policy.rejected")
    assert "default (50) exceeds max (20)" in str(refusal["problem"])
    assert refusal["in_force_sha256"] == change["sha256"]
    # The policy in force is still the last good one.
    await gateway.Search(probe_request(samples, "GOV-3", purpose="child-exploitation"), metadata=metadata)


async def search_as(gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, metadata: object, case: str) -> str:
    found = await gateway.Search(probe_request(samples, case), metadata=metadata)
    assert found.candidates and found.candidates[0].subject_id == "obama"
    return found.search_id


async def review(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    metadata: object,
    search_id: str,
    decision: int,
    notes: str = "",
) -> gateway_pb2.SubmitReviewResponse:
    await look_at_both(gateway, metadata, search_id, 1)
    request = gateway_pb2.SubmitReviewRequest(
        search_id=search_id, rank=1, decision=decision, notes=notes, features=["ears", "eyebrows"]
    )
    return await gateway.SubmitReview(request, metadata=metadata)


async def look_at_both(
    gateway: gateway_pb2_grpc.GatewayServiceStub, metadata: object, search_id: str, rank: int
) -> None:
    """A reviewer's steps before a conclusion: the probe's analysis (sufficient) when the candidates
    wait for it, then the probe and the candidate's photo shown."""
    with contextlib.suppress(grpc.aio.AioRpcError):  # refused (to the searcher, say): the review says why
        seen = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=search_id), metadata=metadata)
        if seen.candidate_count and not seen.candidates:
            await gateway.RecordAnalysis(
                gateway_pb2.RecordAnalysisRequest(search_id=search_id, sufficient=True), metadata=metadata
            )
    for shown in (0, rank):  # a decision needs both photos shown to the reviewer
        with contextlib.suppress(grpc.aio.AioRpcError):  # refused to the searcher, say: the review says why
            await gateway.GetSearchPhoto(
                gateway_pb2.GetSearchPhotoRequest(search_id=search_id, rank=shown), metadata=metadata
            )


async def status_seen_by(gateway: gateway_pb2_grpc.GatewayServiceStub, metadata: object, search_id: str) -> int:
    found = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=search_id), metadata=metadata)
    return found.candidates[0].status


async def test_one_confirmation_is_not_a_lead_two_different_reviewers_make_one_and_reviews_are_blind(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, gallery: None
) -> None:
    search_id = await search_as(gateway, samples, INVESTIGATOR, "REV-1")
    pending = await gateway.ListPendingReviews(gateway_pb2.ListPendingReviewsRequest(), metadata=RITA)
    assert search_id in [s.search_id for s in pending.searches]

    first = await review(gateway, RITA, search_id, gateway_pb2.DECISION_CONFIRM)
    assert first.status == gateway_pb2.CANDIDATE_STATUS_UNSPECIFIED  # blind: reviewers see no outcome
    assert await status_seen_by(gateway, INVESTIGATOR, search_id) == gateway_pb2.CANDIDATE_STATUS_PENDING
    with pytest.raises(grpc.aio.AioRpcError) as twice:
        await review(gateway, RITA, search_id, gateway_pb2.DECISION_CONFIRM)
    assert twice.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # ACE-V: Rob sees no candidate before he records his analysis of the probe alone.
    unanalysed = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=search_id), metadata=ROB)
    assert not unanalysed.candidates and unanalysed.candidate_count == 1
    assert unanalysed.analysis == gateway_pb2.ANALYSIS_UNSPECIFIED
    with pytest.raises(grpc.aio.AioRpcError) as unseen:
        await gateway.GetSearchPhoto(gateway_pb2.GetSearchPhotoRequest(search_id=search_id, rank=1), metadata=ROB)
    assert unseen.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "record your analysis of the probe first" in (unseen.value.details() or "")
    await gateway.RecordAnalysis(gateway_pb2.RecordAnalysisRequest(search_id=search_id, sufficient=True), metadata=ROB)
    # Then he sees the candidate but neither Rita's decision nor a status.
    blind = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=search_id), metadata=ROB)
    assert blind.analysis == gateway_pb2.ANALYSIS_SUFFICIENT
    assert blind.candidates[0].status == gateway_pb2.CANDIDATE_STATUS_UNSPECIFIED
    assert list(blind.candidates[0].reviews) == []
    await review(gateway, ROB, search_id, gateway_pb2.DECISION_CONFIRM)

    assert await status_seen_by(gateway, INVESTIGATOR, search_id) == gateway_pb2.CANDIDATE_STATUS_LEAD
    full = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=search_id), metadata=SUE)
    assert [(r.reviewer, r.decision) for r in full.candidates[0].reviews] == [
        ("rita", gateway_pb2.DECISION_CONFIRM),
        ("rob", gateway_pb2.DECISION_CONFIRM),
    ]
    pending = await gateway.ListPendingReviews(gateway_pb2.ListPendingReviewsRequest(), metadata=RITA)
    assert search_id not in [s.search_id for s in pending.searches]

    async def lead_recorded_once() -> bool:
        leads = await audit_records(stack, case_number="REV-1", kinds=["review.confirmed"])
        return [json.loads(r.event.details_json)["reviewers"] for r in leads] == [["rita", "rob"]]

    await eventually(lead_recorded_once)
    submitted = await audit_records(stack, case_number="REV-1", kinds=["review.submitted"])
    assert [r.event.actor for r in submitted] == ["rita", "rob"]


async def test_an_investigator_sees_only_their_own_searches(
    gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, gallery: None
) -> None:
    search_id = await search_as(gateway, samples, INVESTIGATOR, "REV-4")
    _, other = fresh_investigator()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=search_id), metadata=other)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    mine = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=search_id), metadata=INVESTIGATOR)
    assert mine.searched_by == "ivy" and mine.case_number == "REV-4"
    assert mine.candidates[0].status == gateway_pb2.CANDIDATE_STATUS_PENDING
    assert not mine.probe_image  # the test stack's policy keeps no probes


async def test_the_searcher_may_not_review_their_own_search(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, gallery: None
) -> None:
    search_id = await search_as(gateway, samples, IRIS, "REV-2")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await review(gateway, IRIS, search_id, gateway_pb2.DECISION_CONFIRM)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "own search" in (refused.value.details() or "")
    pending = await gateway.ListPendingReviews(gateway_pb2.ListPendingReviewsRequest(), metadata=IRIS)
    assert search_id not in [s.search_id for s in pending.searches]

    async def audited() -> bool:
        return await refusal_rule(stack, "iris", "REV-2", "review.refused") == ["own_search"]

    await eventually(audited)


async def test_a_split_goes_to_a_supervisor_whose_decision_settles_it(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, gallery: None
) -> None:
    search_id = await search_as(gateway, samples, INVESTIGATOR, "REV-3")
    await review(gateway, RITA, search_id, gateway_pb2.DECISION_CONFIRM)
    with pytest.raises(grpc.aio.AioRpcError) as no_notes:
        await review(gateway, ROB, search_id, gateway_pb2.DECISION_REJECT)
    assert no_notes.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await review(gateway, ROB, search_id, gateway_pb2.DECISION_REJECT, "ear shape differs")
    assert await status_seen_by(gateway, SUE, search_id) == gateway_pb2.CANDIDATE_STATUS_DISPUTED

    disputed = await gateway.ListPendingReviews(gateway_pb2.ListPendingReviewsRequest(), metadata=SUE)
    assert search_id in [s.search_id for s in disputed.searches]
    settled = await review(gateway, SUE, search_id, gateway_pb2.DECISION_REJECT, "not enough to confirm")
    assert settled.status == gateway_pb2.CANDIDATE_STATUS_REJECTED
    with pytest.raises(grpc.aio.AioRpcError) as closed:
        await review(gateway, SUE, search_id, gateway_pb2.DECISION_CONFIRM, "changed my mind")
    assert closed.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    async def every_step_audited() -> bool:
        kinds = [r.event.kind for r in await audit_records(stack, case_number="REV-3")]
        steps = [k for k in kinds if k.startswith("review.") or k == "search.completed"]
        return steps == [
            "search.completed",
            "review.analysed",
            "review.submitted",
            "review.analysed",
            "review.refused",
            "review.submitted",
            "review.disputed",
            "review.submitted",
            "review.rejected",
            "review.refused",
        ]

    await eventually(every_step_audited)
    export = await gateway.ExportCase(gateway_pb2.ExportCaseRequest(case_number="REV-3"), metadata=AUDITOR)
    assert sum(r.event.kind == "review.submitted" for r in export.records) == 3


async def test_a_deciding_review_cut_short_still_records_the_outcome_and_its_retry_is_answered(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, gallery: None
) -> None:
    """The second reviewer's desk gives up (a deadline, a dropped connection) while the gateway is
    between recording the review and recording the candidate's outcome. The lead must still be
    recorded (review.confirmed, which the event feed sends to the case system), and the reviewer's
    retry must be answered: the review if the first call never recorded it, "already reviewed" if
    it did."""
    _, investigator = fresh_investigator()
    timed = await search_as(gateway, samples, investigator, "REV-CUT-T")
    await review(gateway, RITA, timed, gateway_pb2.DECISION_CONFIRM)
    await look_at_both(gateway, ROB, timed, 1)
    began = time.monotonic()
    await gateway.SubmitReview(_confirm(timed), metadata=ROB)
    whole_s = time.monotonic() - began
    cut: set[str] = set()  # the searches whose review's caller gave up
    # From a third of a whole review's time to a little over it.
    for step, wait in enumerate(deadlines(whole_s, 12, 0.3, 1.125)):
        search_id = await search_as(gateway, samples, investigator, f"REV-CUT-{step}")
        await review(gateway, RITA, search_id, gateway_pb2.DECISION_CONFIRM)
        await look_at_both(gateway, ROB, search_id, 1)
        if await cut_short(gateway.SubmitReview(_confirm(search_id), metadata=ROB, timeout=wait)):
            cut.add(search_id)
    unsettled: list[str] = []
    recorded: set[str] = set()

    async def every_recorded_review_has_its_outcome() -> bool:
        # A cut review may still be on its way to the chain (it runs on after its caller left):
        # those recorded so far must have their outcome, and at least one must be recorded.
        reviewed = (await audited(stack, ["review.submitted"], "search_id", actor="rob"))["review.submitted"]
        decided = (await audited(stack, ["review.confirmed"], "search_id"))["review.confirmed"]
        recorded.clear()
        recorded.update(cut & reviewed)
        unsettled[:] = [s for s in recorded if s not in decided]
        return bool(recorded) and not unsettled

    await nothing_left_half_done(
        every_recorded_review_has_its_outcome,
        unsettled,
        f"{len(cut)} leads decided by a cut review were never recorded",
        f"no review was cut short after it was recorded (a whole one took {whole_s * 1000:.0f} ms)",
    )
    for search_id in cut:  # the desk sends the same review again: answered, or told it is recorded
        try:
            again = await gateway.SubmitReview(_confirm(search_id), metadata=ROB)
            assert again.review_id == review_event_id(search_id, 1, "rob")
        except grpc.aio.AioRpcError as told:
            assert told.code() == grpc.StatusCode.FAILED_PRECONDITION and "already reviewed" in (told.details() or "")
        assert await status_seen_by(gateway, investigator, search_id) == gateway_pb2.CANDIDATE_STATUS_LEAD

    async def every_lead_recorded() -> bool:
        decided = (await audited(stack, ["review.confirmed"], "search_id"))["review.confirmed"]
        unsettled[:] = sorted(cut - decided)
        return not unsettled

    try:
        await eventually(every_lead_recorded)
    except AssertionError:
        pytest.fail(f"after the retries, {len(unsettled)} of {len(cut)} leads were still not recorded: {unsettled}")
    with pytest.raises(grpc.aio.AioRpcError) as changed:  # another decision is still a second review
        await gateway.SubmitReview(_confirm(timed, gateway_pb2.DECISION_REJECT, "second thoughts"), metadata=ROB)
    assert changed.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def _confirm(
    search_id: str, decision: int = gateway_pb2.DECISION_CONFIRM, notes: str = ""
) -> gateway_pb2.SubmitReviewRequest:
    return gateway_pb2.SubmitReviewRequest(
        search_id=search_id, rank=1, decision=decision, notes=notes, features=["ears", "eyebrows"]
    )


async def test_a_read_your_writes_query_waits_for_the_chain(stack: InProcessStack) -> None:
    records = await audit_records(stack, wait_for_stream_sequence=1, kinds=["config.loaded"])
    assert records and all(r.event.kind == "config.loaded" for r in records)
    with pytest.raises(grpc.aio.AioRpcError) as behind:
        await audit_records(stack, wait_for_stream_sequence=10**9)
    assert behind.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_query_listing_more_than_a_thousand_events_or_cases_is_refused_with_the_limit(
    stack: InProcessStack,
) -> None:
    """Each query is recorded on the chain with what it asked: its lists of events and cases are
    bounded, and one past the bound is refused, saying the bound."""
    assert await audit_records(stack, event_ids=[f"never-{n}" for n in range(1000)]) == []
    for listed in ("event_ids", "case_numbers"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await audit_records(stack, **{listed: [f"never-{n}" for n in range(1001)]})
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "at most 1000 event ids and 1000 cases" in (refused.value.details() or "")

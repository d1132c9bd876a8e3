"""The policy file: validation at start-up, each rule's refusal naming the rule, and the review
state the workflow computes from audit records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from candor.audit.v1 import audit_pb2
from candor.common.v1 import common_pb2
from candor.gateway.v1 import gateway_pb2
from candor_gateway.search_file import fold
from candor_kit import ConfigError, InvalidInput, PolicyViolation
from candor_kit.policy import DEFAULT_POLICY_YAML, Rule, load_policy, parse_policy

DEPLOYED_POLICY = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "config" / "policy.yaml"
POLICY = parse_policy(DEFAULT_POLICY_YAML.encode())


def with_changes(**changes: object) -> bytes:
    """The default policy with some top-level entries replaced."""
    document = yaml.safe_load(DEFAULT_POLICY_YAML)
    document.update(changes)
    return yaml.safe_dump(document).encode()


def test_the_default_and_the_deployed_policies_are_valid_and_keep_no_probes() -> None:
    deployed = load_policy(DEPLOYED_POLICY)
    assert deployed.policy == POLICY
    assert POLICY.retention.keep_probes and POLICY.reviews.needed == 2
    assert POLICY.authorisation_reference == "required" and POLICY.candidates.max == 20
    assert len(deployed.sha256) == 64


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (b"version: 1\npurposes: [investigation]\nshoe_size: 9\n", "shoe_size: Extra inputs are not permitted"),
        (with_changes(candidates={"default": 30, "max": 20}), "candidates: Value error, default (30) exceeds max"),
        (with_changes(purposes=[]), "purposes: List should have at least 1 item"),
        (with_changes(purposes=["Homicide!"]), "purposes: Value error, purposes must be lower-case"),
        (with_changes(version=2), "version: Input should be 1"),
        (with_changes(reviews={"needed": 1}), "reviews.needed: Input should be greater than or equal to 2"),
        (with_changes(authorisation_reference="sometimes"), "authorisation_reference: Input should be"),
        (with_changes(thresholds={"dlib": -1}), "thresholds.dlib: Input should be greater than 0"),
        (b"version: 1\npurposes: [a\n", "not valid YAML"),
        (b"- just\n- a list\n", "must be a mapping"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_problem(text: bytes, named: str) -> None:
    with pytest.raises(ConfigError, match="policy") as refused:
        parse_policy(text, "policy.yaml")
    assert named in str(refused.value)


def test_a_missing_policy_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_policy(tmp_path / "absent.yaml")


def test_each_search_rule_refuses_naming_its_rule() -> None:
    cases = [
        (("", "investigation", "W-1", 0), InvalidInput, Rule.CASE),
        (("CASE 1; DROP", "investigation", "W-1", 0), InvalidInput, Rule.CASE),
        (("CASE-1", "", "W-1", 0), InvalidInput, Rule.PURPOSE),
        (("CASE-1", "curiosity", "W-1", 0), PolicyViolation, Rule.PURPOSE),
        (("CASE-1", "investigation", "  ", 0), PolicyViolation, Rule.AUTHORISATION),
        (("CASE-1", "investigation", "W-1", 21), PolicyViolation, Rule.CANDIDATES),
    ]
    for arguments, error, rule in cases:
        with pytest.raises(error) as refused:
            POLICY.check_search(*arguments)
        assert refused.value.rule == rule, arguments
    assert POLICY.check_search("CASE-1", "investigation", "W-1", 0) == 10
    assert POLICY.check_search("CASE-1", "investigation", "W-1", 20) == 20
    optional = parse_policy(with_changes(authorisation_reference="optional"))
    assert optional.check_search("CASE-1", "investigation", "", 0) == 10


@pytest.mark.parametrize(
    "case",
    ["a/../../../tmp/x", "../x", "A//B", "A/", "/A", ".hidden", "A/.x", "CASE\x1b[31m", "C\u202eX", "x" * 65, "A"],
)
def test_a_case_number_a_path_or_a_terminal_would_read_is_refused(case: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        POLICY.check_search(case, "investigation", "W-1", 0)
    assert refused.value.rule == Rule.CASE


@pytest.mark.parametrize("case", ["2026.000123", "CASE-E2E-6/2026", "A1", "HQ/2026/17_b", "x" * 64])
def test_case_numbers_of_usual_shapes_are_accepted(case: str) -> None:
    assert POLICY.check_search(case, "investigation", "W-1", 0) == 10


def test_a_ten_kilobyte_purpose_is_permission_denied_without_echoing_it() -> None:
    purpose = "p" * 10_240
    with pytest.raises(PolicyViolation) as refused:
        POLICY.check_search("CASE-1", purpose, "W-1", 0)
    assert refused.value.rule == Rule.PURPOSE
    assert purpose not in refused.value.message and len(refused.value.message) < 200
    with pytest.raises(PolicyViolation, match="'curiosity' is not allowed"):
        POLICY.check_search("CASE-1", "curiosity", "W-1", 0)


@pytest.mark.parametrize("reference", ["W-1\x1b[2J", "W-1\u202e", "W-1\nforged line", "W\x00"])
def test_an_authorisation_reference_with_control_characters_is_refused(reference: str) -> None:
    with pytest.raises(InvalidInput, match="control or formatting") as refused:
        POLICY.check_search("CASE-1", "investigation", reference, 0)
    assert refused.value.rule == Rule.AUTHORISATION
    assert POLICY.check_search("CASE-1", "investigation", "Warrant 2026/17 (Judge Smith), §4", 0) == 10


def test_a_small_or_blurry_probe_is_refused_as_probe_quality() -> None:
    strict = parse_policy(with_changes(probe_quality={"min_face_px": 80, "min_blur": 50}))
    strict.check_probe(common_pb2.FaceQuality(face_size_px=80, blur=50))
    for quality, said in (((79, 60.0), "79 px wide"), ((120, 49.0), "too blurry")):
        with pytest.raises(PolicyViolation, match=said) as refused:
            strict.check_probe(common_pb2.FaceQuality(face_size_px=quality[0], blur=quality[1]))
        assert refused.value.rule == Rule.PROBE_QUALITY


def test_a_policy_threshold_only_tightens_the_calibrated_one() -> None:
    policy = parse_policy(with_changes(thresholds={"dlib": 0.5}))
    model = common_pb2.ModelRef(id="dlib", threshold=0.6)
    assert policy.threshold(model).threshold == pytest.approx(0.5)
    assert policy.threshold(common_pb2.ModelRef(id="dlib", threshold=0.4)).threshold == pytest.approx(0.4)
    assert policy.threshold(common_pb2.ModelRef(id="other", threshold=0.7)).threshold == pytest.approx(0.7)


def test_probes_are_kept_until_reviewed_plus_a_period_by_default_and_the_period_is_bounded() -> None:
    assert POLICY.retention.keep_probes and POLICY.retention.probe_days_after_decision == 30
    with pytest.raises(ConfigError, match="probe_days_after_decision"):
        parse_policy(with_changes(retention={"keep_probes": True, "probe_days_after_decision": -1}))
    with pytest.raises(ConfigError, match="probe_days"):
        parse_policy(with_changes(retention={"probe_days": 30}))


def record(sequence: int, kind: str, actor: str, event_id: str, **details: object) -> audit_pb2.AuditRecord:
    """An audit record as the chain returns it."""
    event = audit_pb2.AuditEvent(
        event_id=event_id, kind=kind, actor=actor, case_number="C-1", details_json=json.dumps(details)
    )
    return audit_pb2.AuditRecord(sequence=sequence, event=event)


def review(sequence: int, reviewer: str, decision: str, role: str = "reviewer", rank: int = 1) -> audit_pb2.AuditRecord:
    return record(
        sequence, "review.submitted", reviewer, f"r{sequence}", search_id="s1", rank=rank, decision=decision, role=role
    )


SEARCHED = record(1, "search.completed", "ivy", "s1", candidates=[{"rank": 1, "subject_id": "x", "distance": 0.3}])


@pytest.mark.parametrize(
    ("reviews", "status"),
    [
        ([], gateway_pb2.CANDIDATE_STATUS_PENDING),
        ([review(2, "rita", "confirm")], gateway_pb2.CANDIDATE_STATUS_PENDING),
        ([review(2, "rita", "confirm"), review(3, "rob", "confirm")], gateway_pb2.CANDIDATE_STATUS_LEAD),
        ([review(2, "rita", "reject"), review(3, "rob", "reject")], gateway_pb2.CANDIDATE_STATUS_REJECTED),
        ([review(2, "rita", "confirm"), review(3, "rob", "reject")], gateway_pb2.CANDIDATE_STATUS_DISPUTED),
        (
            [review(2, "rita", "confirm"), review(3, "rob", "reject"), review(4, "sue", "reject", "supervisor")],
            gateway_pb2.CANDIDATE_STATUS_REJECTED,
        ),
        (
            [review(2, "rita", "confirm"), review(3, "rob", "reject"), review(4, "sue", "confirm", "supervisor")],
            gateway_pb2.CANDIDATE_STATUS_LEAD,
        ),
    ],
)
def test_one_confirmation_is_not_a_lead_two_are_and_a_split_is_disputed(
    reviews: list[audit_pb2.AuditRecord], status: int
) -> None:
    found = fold([SEARCHED, *reviews], needed=2)["s1"]
    assert found.status(1) == status


def test_three_confirmations_are_needed_when_the_search_was_made_under_a_policy_of_three() -> None:
    searched = record(1, "search.completed", "ivy", "s1", reviews_needed=3, candidates=[{"rank": 1, "subject_id": "x"}])
    found = fold([searched, review(2, "rita", "confirm"), review(3, "rob", "confirm")], needed=2)["s1"]
    assert found.status(1) == gateway_pb2.CANDIDATE_STATUS_PENDING
    assert found.reviewers(1) == {"rita", "rob"}
    assert fold([SEARCHED, review(2, "rita", "confirm")], needed=1)["s1"].status(1) == gateway_pb2.CANDIDATE_STATUS_LEAD

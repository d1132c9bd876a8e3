"""The oversight report counts what the audit records say, and only that."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from candor.audit.v1 import audit_pb2
from candor_cli import report


def record(sequence: int, kind: str, actor: str, purpose: str = "", **details: object) -> audit_pb2.AuditRecord:
    event = audit_pb2.AuditEvent(event_id=f"e{sequence}", kind=kind, actor=actor, purpose=purpose)
    event.details_json = json.dumps(details)
    event.occurred_at.FromJsonString(f"2026-11-28T10:00:{sequence:02d}Z")
    return audit_pb2.AuditRecord(sequence=sequence, event=event)


RECORDS = [
    record(1, "search.completed", "ivy", "investigation", candidates=[{"rank": 1, "subject_id": "B-1"}]),
    record(2, "search.completed", "ivy", "investigation", candidates=[]),
    record(3, "search.completed", "sam", "missing-person", candidates=[{"rank": 1, "subject_id": "B-2"}]),
    record(
        4,
        "search.refused",
        "sam",
        "curiosity",
        code="PERMISSION_DENIED",
        reason="purpose 'curiosity' is not allowed",
        rule="purpose",
    ),
    record(5, "enroll.refused", "eric", code="INVALID_ARGUMENT", reason="no face"),
    record(6, "subject.deleted", "eric", subject_id="B-9", reason="court order 42", records=2),
    record(7, "review.confirmed", "rita", search_id="s1", rank=1),
    record(8, "audit.verified", "audrey", ok=True),
    # An expunge that had to keep a photo whose header could not be read: the commission sees it.
    record(9, "subject.deleted", "eric", subject_id="B-7", reason="court order 43", records=1, photos_unreadable=1),
]


def test_the_numbers_come_from_the_records() -> None:
    made = report.compute(RECORDS, ("2026-11-01", "2026-11-30"))
    assert made.records == 9
    assert made.searches_by_purpose == {"investigation": 2, "missing-person": 1}
    assert made.outcomes == {"candidates returned": 2, "no candidate": 1, "refused": 1}
    assert made.reviews == {"confirmed": 1, "rejected": 0, "disputed": 0}
    assert made.refusals_by_rule == {"search: purpose": 1}
    assert made.errors == {"enroll: INVALID_ARGUMENT: no face": 1}
    assert made.searches_by_user.most_common(1) == [("ivy", 2)]
    assert [(d["by"], d["what"], d["reason"]) for d in made.deletions] == [
        ("eric", "B-9", "court order 42"),
        ("eric", "B-7 (1 unreadable photo kept)", "court order 43"),
    ]


def test_markdown_and_html_carry_the_tables_and_the_charts(tmp_path: Path) -> None:
    made = report.compute(RECORDS, ("2026-11-01", "2026-11-30"))
    images = report.charts(made, tmp_path)
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in images.values())
    text = report.markdown(made, images)
    assert "| investigation | 2 |" in text and "| refused | 1 |" in text and "court order 42" in text
    assert "![busiest users](busiest-users.png)" in text
    page = report.to_html(text, images)
    assert page.count("data:image/png;base64,") == len(images) and "<td>investigation</td>" in page


def test_the_calibration_searches_ran_under_is_shown_with_its_per_group_figures(tmp_path: Path) -> None:
    sface = {"id": "sface", "version": "1", "metric": "cosine"}
    searches = [
        record(1, "search.completed", "ivy", "investigation", model=sface, threshold=0.61, calibration_id="c" * 64),
        record(2, "search.completed", "ivy", "investigation", model=sface, threshold=0.61, calibration_id="c" * 64),
        record(3, "search.completed", "sam", "investigation", model=sface, threshold=0.642, calibration_id=None),
    ]
    female = {"rate": 0.0, "ci": [0.0, 0.0925], "count": 0, "trials": 38}
    calibrations = [
        record(
            1, "model.calibrated", "op", model="sface", version="1", metric="cosine", threshold=0.61,
            calibration_id="c" * 64, rule="every-group", target_fmr=0.001, target_fpir=0.03,
            dataset_fingerprint="f" * 64,
            per_group=[
                {"group": "female", "fmr": 0.0006, "fmr_ci": [7.7e-05, 0.0023], "fnmr": 0.0, "fnmr_ci": [0, 0.011]}
            ],
            identification={"per_group": [{"group": "female", "rank1": None, "fnir": None, "fpir": female}]},
        ),
        record(2, "model.calibrated", "op", model="sface", version="1", threshold=0.7, calibration_id="d" * 64),
    ]  # fmt: skip
    made = report.compute(searches, ("2026-11-01", "2026-11-30"), calibrations)
    text = report.markdown(made, report.charts(made, tmp_path))
    assert "| sface 1 | cosine | 0.6100 | cccccccccccc | 2 |" in text
    assert "| sface 1 | cosine | 0.6420 | UNCALIBRATED (the model's nominal threshold) | 1 |" in text
    assert "rule every-group: FMR at most 0.001, FPIR at most 0.03" in text
    assert "| female | 0.0006 [7.7e-05, 0.0023] | 0 [0, 0.011] | n/a (too few searches) |" in text
    assert "0 [0, 0.0925] (0/38) |" in text
    assert "dddddddddddd" not in text  # a calibration no search of the period used is not shown
    # A calibration no operator recorded is shown from the gateway's record of it in use.
    in_use = record(3, "calibration.in_use", "system", **json.loads(calibrations[0].event.details_json))
    made = report.compute(searches, ("2026-11-01", "2026-11-30"), [in_use])
    text = report.markdown(made, report.charts(made, tmp_path))
    assert "rule every-group: FMR at most 0.001, FPIR at most 0.03" in text
    assert "recorded by the gateway that used it" in text


def test_each_candidate_counts_once_in_review_outcomes_by_its_latest_outcome() -> None:
    """A dispute a supervisor settled is one candidate: counted under its settled outcome, with the
    settlement said beside it, never as both disputed and confirmed."""
    records = [
        record(1, "review.disputed", "rob", search_id="s1", rank=1),
        record(2, "review.confirmed", "sue", search_id="s1", rank=1, settled_by="sue"),
        record(3, "review.rejected", "rob", search_id="s1", rank=2),
        record(4, "review.disputed", "rob", search_id="s2", rank=1),
        # A second gateway's copy of the same outcome (the same event id) is the same candidate.
        record(5, "review.rejected", "rob", search_id="s1", rank=2),
    ]
    made = report.compute(records, ("2026-11-01", "2026-11-30"))
    assert made.reviews == {"confirmed": 1, "rejected": 1, "disputed": 1}
    assert made.settled_disputes == 1


def test_one_time_format_everywhere() -> None:
    made = report.compute(RECORDS, ("2026-11-01", "2026-11-30"))
    assert made.deletions[0]["when"] == "2026-11-28 10:00:06 UTC"


def test_csv_holds_every_table_row_by_section() -> None:
    made = report.compute(RECORDS, ("2026-11-01", "2026-11-30"))
    rows = list(csv.reader(io.StringIO(report.to_csv(made))))
    assert rows[0] == ["section", "name", "count", "detail"]
    assert ["searches by purpose", "investigation", "2", ""] in rows
    assert ["policy refusals", "search: purpose", "1", ""] in rows
    assert ["interface errors", "enroll: INVALID_ARGUMENT: no face", "1", ""] in rows
    assert ["review outcomes", "confirmed", "1", ""] in rows
    assert ["deletions", "B-9", "", "2026-11-28 10:00:06 UTC by eric: court order 42"] in rows


def test_pdf_is_a_pdf_with_the_report_text() -> None:
    made = report.compute(RECORDS, ("2026-11-01", "2026-11-30"))
    data = report.to_pdf(made)
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    text = pdf_text(data)
    for expected in ("Candor oversight report, 2026-11-01 to 2026-11-30", "Policy refusals", "court order 42"):
        assert expected in text


def pdf_text(data: bytes) -> str:
    """The text of a PDF, read back with pypdf (an independent reader)."""
    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_csv_quotes_a_cell_a_spreadsheet_would_run_as_a_formula() -> None:
    made = report.compute(
        [record(1, "search.refused", "=HYPERLINK(1)", code="INVALID_ARGUMENT", reason="x")], ("a", "b")
    )
    rows = list(csv.reader(io.StringIO(report.to_csv(made))))
    assert ["searches by user", "'=HYPERLINK(1)", "1", ""] in rows


def test_reviewer_agreement_counts_every_pair_of_reviewers_of_a_real_candidate_by_kind_of_conclusion() -> None:
    def review(sequence: int, actor: str, search: str, decision: str, role: str = "reviewer") -> audit_pb2.AuditRecord:
        return record(sequence, "review.submitted", actor, search_id=search, rank=1, decision=decision, role=role)

    records = [
        review(1, "rita", "s1", "confirm"),
        review(2, "rob", "s1", "probably-same"),  # the same kind: agreement
        review(3, "rita", "s2", "confirm"),
        review(4, "rob", "s2", "reject"),  # disagreement
        review(5, "sue", "s2", "reject", role="supervisor"),  # a supervisor's settlement is not a pair
        review(6, "rita", "t1", "confirm"),
        review(7, "rob", "t1", "confirm"),  # a known-answer test: not real work
    ]
    seeded = record(8, "proficiency.seeded", "sue", answer="different")
    seeded.event.event_id = "t1"
    made = report.compute(records, ("a", "b"), [seeded])
    assert (made.agreement.count, made.agreement.trials) == (1, 2)
    assert {name: (r.count, r.trials) for name, r in made.agreement_by_reviewer.items()} == {
        "rita": (1, 2),
        "rob": (1, 2),
    }


def test_proficiency_scores_a_same_conclusion_on_different_people_as_a_false_same() -> None:
    seeded = [record(1, "proficiency.seeded", "sue", answer="different")]
    seeded[0].event.event_id = "t1"
    records = [
        record(2, "review.submitted", "rita", search_id="t1", rank=1, decision="confirm", role="reviewer"),
        record(3, "review.submitted", "rob", search_id="t1", rank=1, decision="inconclusive", role="reviewer"),
    ]
    made = report.compute(records, ("a", "b"), seeded)
    scores = {s.reviewer: s for s in made.proficiency}
    assert (scores["rita"].accuracy.count, scores["rita"].false_same) == (0, 1)
    assert (scores["rob"].accuracy.count, scores["rob"].neither) == (0, 1)
    assert ["reviewer proficiency", "rita", "1"] == next(
        row[:3] for row in csv.reader(io.StringIO(report.to_csv(made))) if row[:2] == ["reviewer proficiency", "rita"]
    )


def test_calls_by_service_account_are_counted_by_account_and_kind(tmp_path: Path) -> None:
    # Which actors are service accounts comes from the gateway's record of each account's first
    # call of a day, from the chain's start (evidence), not from the names.
    evidence = [
        record(1, "service_account.used", "agency-cms", role="case-system"),
        record(2, "service_account.used", "booking-east", role="booking-sync"),
    ]
    period = [
        record(10, "search.completed", "agency-cms", "investigation", candidates=[]),
        record(11, "matcher.searched", "agency-cms"),  # the matcher's own record of the same search
        record(12, "search.completed", "agency-cms", "investigation", candidates=[]),
        record(13, "case.exported", "agency-cms"),
        record(14, "enroll.completed", "booking-east"),
        record(15, "search.completed", "ivy", "investigation", candidates=[]),
    ]
    made = report.compute(period, ("2026-11-01", "2026-11-30"), evidence)
    assert made.service_account_calls == {
        "agency-cms (case-system): search.completed": 2,
        "agency-cms (case-system): case.exported": 1,
        "booking-east (booking-sync): enroll.completed": 1,
    }
    text = report.markdown(made, report.charts(made, tmp_path))
    assert "## Calls by service account" in text
    assert "| agency-cms (case-system): search.completed | 2 |" in text
    rows = list(csv.reader(io.StringIO(report.to_csv(made))))
    assert ["calls by service account", "booking-east (booking-sync): enroll.completed", "1", ""] in rows
    assert "service_account.used" in report.EVIDENCE_KINDS

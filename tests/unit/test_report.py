"""The oversight report counts what the audit records say, and only that."""

from __future__ import annotations

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
    record(7, "review.confirmed", "rita"),
    record(8, "audit.verified", "audrey", ok=True),
]


def test_the_numbers_come_from_the_records() -> None:
    made = report.compute(RECORDS, ("2026-11-01", "2026-11-30"))
    assert made.records == 8
    assert made.searches_by_purpose == {"investigation": 2, "missing-person": 1}
    assert made.outcomes == {"candidates returned": 2, "no candidate": 1, "refused": 1}
    assert made.reviews == {"confirmed": 1, "rejected": 0, "disputed": 0}
    assert made.refusals_by_rule == {
        "search: purpose": 1,
        "enroll: INVALID_ARGUMENT: no face": 1,
    }
    assert made.searches_by_user.most_common(1) == [("ivy", 2)]
    assert [(d["by"], d["what"], d["reason"]) for d in made.deletions] == [("eric", "B-9", "court order 42")]


def test_markdown_and_html_carry_the_tables_and_the_charts(tmp_path: Path) -> None:
    made = report.compute(RECORDS, ("2026-11-01", "2026-11-30"))
    images = report.charts(made, tmp_path)
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in images.values())
    text = report.markdown(made, images)
    assert "| investigation | 2 |" in text and "| refused | 1 |" in text and "court order 42" in text
    assert "![busiest users](busiest-users.png)" in text
    page = report.to_html(text, images)
    assert page.count("data:image/png;base64,") == len(images) and "<td>investigation</td>" in page

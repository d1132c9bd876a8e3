"""Text from a caller, hostile or careless, is bounded and escaped before it is kept or shown."""

from __future__ import annotations

import json

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from candor.audit.v1 import audit_pb2
from candor.gateway.v1 import gateway_pb2
from candor_audit.answers import query_entry
from candor_cli.case_export import export_file_stem, render_html
from candor_gateway.refusals import EXCERPT_CHARS, describe_malformed
from candor_kit.audit_records import entry_from_event, rfc3339
from candor_kit.errors import MAX_MESSAGE_CHARS, InvalidInput


def test_a_malformed_field_is_kept_as_length_hash_and_a_short_escaped_excerpt() -> None:
    value = "\x1b[31m" + "A" * 8_000_000
    described = describe_malformed(value)
    assert described["length"] == len(value)
    assert len(described["sha256"]) == 64
    assert described["excerpt"].startswith("\\x1b[31m")
    assert len(described["excerpt"]) <= EXCERPT_CHARS * 4
    assert len(json.dumps(described)) < 300
    assert all(ch.isprintable() for ch in described["excerpt"])


def test_an_error_message_quoting_a_huge_input_is_bounded() -> None:
    error = InvalidInput(f"model id {'x' * 100_000!r} cannot route work")
    assert len(error.message) == MAX_MESSAGE_CHARS + 1
    assert str(error) == error.message


def test_export_files_of_different_cases_never_share_a_name() -> None:
    assert export_file_stem("2026.000123") == "case-2026.000123"
    assert export_file_stem("2026.000124") == "case-2026.000124"
    assert export_file_stem("A/1") != export_file_stem("A_1") == "case-A_1"
    for hostile in ("a/../../../tmp/x", "../../etc/passwd", "..", "/abs/path", "x\x00y"):
        stem = export_file_stem(hostile)
        assert "/" not in stem and "\x00" not in stem and not stem.startswith("."), stem
        assert stem.startswith("case-")


def test_the_export_page_shows_control_characters_as_escape_codes() -> None:
    event = audit_pb2.AuditEvent(
        kind="search.refused",
        actor="anonymous\x1b[2J",
        case_number="C\u202e1",
        purpose="<script>alert(1)</script>",
        details_json=json.dumps({"code": "INVALID_ARGUMENT", "reason": "bad \x1b]0;title\x07"}),
    )
    export = gateway_pb2.ExportCaseResponse(
        case_number="C\u202e1", records=[audit_pb2.AuditRecord(sequence=1, event=event)]
    )
    page = render_html(export, [])
    for raw in ("\x1b", "\u202e", "\x07", "<script>"):
        assert raw not in page, ascii(raw)
    assert "anonymous\\x1b[2J" in page and "C\\u202e1" in page and "&lt;script&gt;" in page


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(39_400_515_438_739_404, 0), (-62_135_596_801, 0), (253_402_300_800, 0), (0, -1), (0, 10**9)]
)
def test_a_time_a_timestamp_cannot_hold_is_invalid_input_not_a_crash(seconds: int, nanos: int) -> None:
    # Found by fuzz/grpc_requests.py: an audit event (or a query's since) far outside the years a
    # Timestamp may hold raised OverflowError from deep inside datetime.
    stamp = Timestamp(seconds=seconds, nanos=nanos)
    event = audit_pb2.AuditEvent(event_id="e-1", kind="search.completed", occurred_at=stamp)
    with pytest.raises(InvalidInput):
        entry_from_event(event)
    with pytest.raises(InvalidInput):
        query_entry(audit_pb2.QueryRequest(since=stamp), "2026-12-01T00:00:00.000000Z")


def test_the_first_and_last_moments_a_timestamp_may_hold_keep_the_fixed_width() -> None:
    assert rfc3339(Timestamp(seconds=-62_135_596_800)) == "0001-01-01T00:00:00.000000Z"
    assert rfc3339(Timestamp(seconds=253_402_300_799, nanos=999_999_999)) == "9999-12-31T23:59:59.999999Z"
    assert rfc3339(Timestamp(seconds=1_764_547_200, nanos=1_000)) == "2025-12-01T00:00:00.000001Z"


@pytest.mark.parametrize(
    "details", ['{"candidates": 3}', '{"candidates": [1, "x", null]}', '{"model": "dlib"}', "[1, 2]", "not json"]
)
def test_the_export_page_renders_search_details_of_any_shape(details: str) -> None:
    # Found by fuzz/grpc_requests.py's seeds: a count where a list of candidates was expected
    # raised TypeError and lost the whole export page.
    event = audit_pb2.AuditEvent(event_id="e-1", kind="search.completed", details_json=details)
    page = render_html(gateway_pb2.ExportCaseResponse(records=[audit_pb2.AuditRecord(event=event)]), [])
    assert "No candidate was shown." in page

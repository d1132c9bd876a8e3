"""The discovery export of a case: every audit record naming it, each checkable offline against
the audit key, with a readable HTML copy; only auditors may export, and the export is audited."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from candor.audit.v1 import audit_pb2
from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_cli.case_export import check_records, render_html
from tests.integration.conftest import InProcessStack, as_user
from tests.integration.test_search_flow import audit_records
from tests.waiting import eventually

AUDITOR = as_user("auditor-token")
INVESTIGATOR = as_user("investigator-token")
CASE = "EXPORT-2026-7"


async def test_a_case_export_holds_its_searches_candidates_and_refusals(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    await gateway.Enroll(
        gateway_pb2.EnrollRequest(image=(samples / "obama.jpg").read_bytes(), subject_id="EXPORT-OBAMA"),
        metadata=as_user("enroller-token"),
    )
    probe = (samples / "obama2.jpg").read_bytes()
    try:
        found = await gateway.Search(
            gateway_pb2.SearchRequest(probe_image=probe, case_number=CASE, purpose="investigation"),
            metadata=INVESTIGATOR,
        )
    finally:
        # The gallery is shared with the other tests of the session: leave it as it was.
        await gateway.DeleteSubject(
            gateway_pb2.DeleteSubjectRequest(subject_id="EXPORT-OBAMA", reason="test cleanup"),
            metadata=as_user("enroller-token"),
        )
    with pytest.raises(grpc.aio.AioRpcError):
        await gateway.Search(
            gateway_pb2.SearchRequest(probe_image=probe, case_number=CASE, purpose="curiosity"), metadata=INVESTIGATOR
        )
    await gateway.Search(
        gateway_pb2.SearchRequest(probe_image=probe, case_number="OTHER-CASE", purpose="investigation"),
        metadata=INVESTIGATOR,
    )

    async def all_recorded() -> bool:
        return len(await audit_records(stack, case_number=CASE)) >= 3

    await eventually(all_recorded)
    export = await gateway.ExportCase(gateway_pb2.ExportCaseRequest(case_number=CASE), metadata=AUDITOR)

    # The matcher's own record of the search (made before it answers, durable in its outbox, on
    # the audit stream behind the answer: either side of the gateway's), paired with the
    # gateway's by the search id, then the refusal.
    kinds = [record.event.kind for record in export.records]
    assert sorted(kinds[:2]) == ["matcher.searched", "search.completed"] and kinds[2] == "search.refused"
    matched, searched = sorted((record.event for record in export.records[:2]), key=lambda event: event.kind)
    assert matched.occurred_at.ToNanoseconds() <= searched.occurred_at.ToNanoseconds()
    assert json.loads(matched.details_json)["request_id"] == searched.event_id == found.search_id
    assert matched.actor == searched.actor == "ivy"
    assert {record.event.case_number for record in export.records} == {CASE}
    assert export.verification.ok and export.exported_by == "audrey"
    assert check_records(list(export.records), export.verification.public_key_pem) == []
    page = render_html(export, [])
    shown = found.candidates[0].subject_id
    assert f"<td>{shown}</td>" in page and "curiosity" in page and "Investigative lead only" in page

    tampered = audit_pb2.AuditRecord()
    tampered.CopyFrom(export.records[1])  # the gateway's search.completed, which names the candidates
    tampered.event.details_json = tampered.event.details_json.replace(shown, "SOMEONE-ELSE")
    assert check_records([tampered], export.verification.public_key_pem) == [
        f"record {tampered.sequence}: content does not match its hash"
    ]

    async def export_audited() -> bool:
        return any(r.event.kind == "case.exported" for r in await audit_records(stack, case_number=CASE))

    await eventually(export_audited)


async def test_only_auditors_may_export_and_a_refusal_is_audited(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.ExportCase(gateway_pb2.ExportCaseRequest(case_number="EXPORT-DENIED"), metadata=INVESTIGATOR)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    async def refusal_audited() -> bool:
        records = await audit_records(stack, case_number="EXPORT-DENIED")
        return any(r.event.kind == "export_case.refused" for r in records)

    await eventually(refusal_audited)
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await gateway.ExportCase(gateway_pb2.ExportCaseRequest(case_number=" "), metadata=AUDITOR)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT

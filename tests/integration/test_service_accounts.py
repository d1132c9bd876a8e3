"""Service accounts through the running stack: a case-management system searches for its own cases
and reads their results and exports, never another's; a booking system enrols only with a source
and deletes; every call is audited under the account's name."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path

import grpc
import httpx
import pytest

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_cli.case_export import check_complete
from candor_cli.stack import AUDIENCE, LOCAL_ISSUER
from candor_client import ClientCredentials, GatewayClient
from candor_kit.tokens import issue_token, load_private_key
from tests.integration.conftest import POLICY, TOKEN_KEY, InProcessStack, as_user
from tests.integration.test_governance import fresh_investigator, policy_with
from tests.integration.test_search_flow import audit_records
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


def account(name: str, role: str) -> tuple[tuple[str, str]]:
    """Call metadata for a service account's token, as the identity provider or
    `candor token issue --service-account` would issue it."""
    token = issue_token(load_private_key(TOKEN_KEY), name, [role], 3600, LOCAL_ISSUER, AUDIENCE)
    return (("authorization", f"Bearer {token}"),)


CASE_SYSTEM = account("agency-cms", "case-system")
BOOKING = account("booking-sync-east", "booking-sync")


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_a_case_system_searches_reads_the_result_and_exports_its_case(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    await gateway.Enroll(
        gateway_pb2.EnrollRequest(
            image=(samples / "obama.jpg").read_bytes(), subject_id="SA-OBAMA", metadata={"source": "booking"}
        ),
        metadata=BOOKING,
    )
    try:
        found = await gateway.Search(
            gateway_pb2.SearchRequest(
                probe_image=(samples / "obama2.jpg").read_bytes(), case_number="CMS-2026-11", purpose="investigation"
            ),
            metadata=CASE_SYSTEM,
        )
    finally:
        await gateway.DeleteSubject(
            gateway_pb2.DeleteSubjectRequest(subject_id="SA-OBAMA", reason="test cleanup"), metadata=BOOKING
        )
    # Other tests of the session enrol obama.jpg under other ids: the same distance, any order.
    assert "SA-OBAMA" in [c.subject_id for c in found.candidates]

    result = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=found.search_id), metadata=CASE_SYSTEM)
    assert result.case_number == "CMS-2026-11" and result.searched_by == "agency-cms"
    assert [c.candidate.subject_id for c in result.candidates] == [c.subject_id for c in found.candidates]

    async def recorded() -> bool:
        kinds = {r.event.kind for r in await audit_records(stack, case_number="CMS-2026-11")}
        return {"search.completed", "search.viewed"} <= kinds

    await eventually(recorded)
    export = await gateway.ExportCase(gateway_pb2.ExportCaseRequest(case_number="CMS-2026-11"), metadata=CASE_SYSTEM)
    assert export.exported_by == "agency-cms" and export.verification.ok
    searched = [r for r in export.records if r.event.kind == "search.completed"]
    assert [r.event.actor for r in searched] == ["agency-cms"]

    # Every call is in the chain under the account's name.
    kinds = {r.event.kind for r in await audit_records(stack, actor="agency-cms")}
    assert {"search.completed", "search.viewed"} <= kinds
    enrolled = {r.event.kind for r in await audit_records(stack, actor="booking-sync-east")}
    assert {"enroll.completed", "subject.deleted"} <= enrolled, enrolled


async def test_a_case_system_never_reads_another_callers_search_or_case(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    theirs = await gateway.Search(
        gateway_pb2.SearchRequest(
            probe_image=(samples / "obama2.jpg").read_bytes(), case_number="IVY-2026-5", purpose="investigation"
        ),
        metadata=as_user("investigator-token"),
    )
    denied = await refused(
        gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=theirs.search_id), metadata=CASE_SYSTEM)
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    denied = await refused(
        gateway.ExportCase(gateway_pb2.ExportCaseRequest(case_number="IVY-2026-5"), metadata=CASE_SYSTEM)
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "IVY-2026-5" in (denied.details() or "") and "searched" in (denied.details() or "")
    denied = await refused(
        gateway.SubmitReview(
            gateway_pb2.SubmitReviewRequest(search_id=theirs.search_id, rank=1, decision=gateway_pb2.DECISION_CONFIRM),
            metadata=CASE_SYSTEM,
        )
    )
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED

    async def refusal_recorded() -> bool:
        records = await audit_records(stack, actor="agency-cms", case_number="IVY-2026-5")
        return any(
            r.event.kind == "export_case.refused" and json.loads(r.event.details_json)["code"] == "PERMISSION_DENIED"
            for r in records
        )

    await eventually(refusal_recorded)


async def test_a_booking_system_enrols_only_with_a_source(
    gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    photo = (samples / "biden.jpg").read_bytes()
    for metadata in ({}, {"source": "  "}):
        request = gateway_pb2.EnrollRequest(image=photo, subject_id="SA-B", metadata=metadata)
        error = await refused(gateway.Enroll(request, metadata=BOOKING))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "source" in (error.details() or "")
    enrolled = await gateway.Enroll(
        gateway_pb2.EnrollRequest(image=photo, subject_id="SA-B", metadata={"source": "county-booking"}),
        metadata=BOOKING,
    )
    assert enrolled.created
    deleted = await gateway.DeleteSubject(
        gateway_pb2.DeleteSubjectRequest(subject_id="SA-B", reason="released without charge"), metadata=BOOKING
    )
    assert deleted.deleted_records == 1
    error = await refused(
        gateway.Search(
            gateway_pb2.SearchRequest(probe_image=photo, case_number="SYNC-1", purpose="investigation"),
            metadata=BOOKING,
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_candor_client_searches_with_a_token_from_the_client_credentials_flow(
    stack: InProcessStack, samples: Path, tmp_path: Path
) -> None:
    # The identity provider is a STAND-IN (httpx's MockTransport): it checks the client's secret
    # and issues the access token a real provider would, signed by the key the gateway trusts.
    issued: list[str] = []

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != "Basic " + base64.b64encode(b"agency-cms:s3cret").decode():
            return httpx.Response(401, json={"error": "invalid_client"})
        token = issue_token(load_private_key(TOKEN_KEY), "agency-cms", ["case-system"], 300, LOCAL_ISSUER, AUDIENCE)
        issued.append(token)
        return httpx.Response(200, json={"access_token": token, "token_type": "Bearer", "expires_in": 300})

    secret = tmp_path / "client-secret"
    secret.write_text("s3cret")
    tokens = ClientCredentials(
        "https://idp.test/token", "agency-cms", secret, http=httpx.Client(transport=httpx.MockTransport(token_endpoint))
    )

    def search_twice() -> list[str]:
        with GatewayClient(stack.addresses["gateway"], tokens) as client:
            probe = samples / "obama2.jpg"
            return [client.search(probe, "CC-2026-1", "investigation").search_id for _ in range(2)]

    searched = await asyncio.to_thread(search_twice)
    assert len(set(searched)) == 2 and len(issued) == 1  # one token, kept for both calls

    async def audited() -> bool:
        records = await audit_records(stack, case_number="CC-2026-1", kinds=["search.completed"])
        return [r.event.actor for r in records] == ["agency-cms", "agency-cms"]

    await eventually(audited)


async def test_a_service_accounts_first_call_of_the_day_marks_it_as_a_machine_in_the_chain(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    # The oversight report tells integrations' calls from people's by this record (once a day,
    # however many calls and gateway replicas).
    for _ in range(3):
        await gateway.GetGalleryModels(gateway_pb2.GetGalleryModelsRequest(), metadata=BOOKING)
    await stack.stop("gateway")
    await stack.start("gateway")
    await gateway.GetGalleryModels(gateway_pb2.GetGalleryModelsRequest(), metadata=BOOKING)

    async def marked_once() -> bool:
        records = await audit_records(stack, actor="booking-sync-east", kinds=["service_account.used"])
        return [json.loads(r.event.details_json)["role"] for r in records] == ["booking-sync"]

    await eventually(marked_once)
    people = await audit_records(stack, actor="ivy", kinds=["service_account.used"])
    assert people == []


async def test_a_case_systems_export_of_a_shared_case_holds_only_its_own_searches(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    probe = (samples / "obama2.jpg").read_bytes()
    request = gateway_pb2.SearchRequest(probe_image=probe, case_number="SHARED-2026-3", purpose="investigation")
    theirs = await gateway.Search(request, metadata=as_user("investigator-token"))
    mine = await gateway.Search(request, metadata=CASE_SYSTEM)

    async def both_recorded() -> bool:
        records = await audit_records(stack, case_number="SHARED-2026-3", kinds=["search.completed"])
        return len(records) == 2

    await eventually(both_recorded)
    export = await gateway.ExportCase(gateway_pb2.ExportCaseRequest(case_number="SHARED-2026-3"), metadata=CASE_SYSTEM)
    assert {r.event.event_id for r in export.records if r.event.kind == "search.completed"} == {mine.search_id}
    assert all(r.event.actor != "ivy" for r in export.records)
    assert theirs.search_id not in str(export)
    # A part of a case says so, and carries no manifest naming the records it leaves out.
    assert "agency-cms" in export.scope and not export.verification.HasField("case_manifest")
    problems, covers = check_complete(export, export.verification.public_key_pem)
    assert problems == [] and covers.startswith("partial:")
    whole = await gateway.ExportCase(
        gateway_pb2.ExportCaseRequest(case_number="SHARED-2026-3"), metadata=as_user("auditor-token")
    )
    assert whole.scope == "" and whole.verification.HasField("case_manifest")


async def test_a_case_system_has_its_own_daily_quota(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    # A case system files for many investigators: the policy gives service accounts a quota of
    # their own, while a person keeps the per-user one.
    await stack.use_policy(
        policy_with(quotas={"searches_per_user_per_day": 1, "searches_per_service_account_per_day": 3})
    )
    try:
        cms = account(f"quota-cms-{uuid.uuid4().hex[:8]}", "case-system")
        request = gateway_pb2.SearchRequest(
            probe_image=(samples / "obama2.jpg").read_bytes(), case_number="QUOTA-CMS-1", purpose="investigation"
        )
        for _ in range(3):
            await gateway.Search(request, metadata=cms)
        refused_search = await refused(gateway.Search(request, metadata=cms))
        assert refused_search.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "quota of 3 searches" in (refused_search.details() or "")
        _, person = fresh_investigator()
        await gateway.Search(request, metadata=person)
        refused_person = await refused(gateway.Search(request, metadata=person))
        assert "quota of 1 search" in (refused_person.details() or "")
    finally:
        await stack.use_policy(POLICY)

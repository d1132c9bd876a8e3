"""Every RPC of the gateway by every role: allowed or PERMISSION_DENIED exactly as RPC_ROLES says,
and every denial is in the audit log."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_cli.stack import AUDIENCE, LOCAL_ISSUER
from candor_gateway.access import RPC_ROLES, Permission
from candor_kit.tokens import ROLES, issue_token, load_private_key
from tests.integration.conftest import TOKEN_KEY, InProcessStack
from tests.integration.test_search_flow import audit_records
from tests.waiting import eventually

Call = Callable[[gateway_pb2_grpc.GatewayServiceStub, Any], Awaitable[Any]]

#: Each RPC with the smallest request (so an allowed call fails on its input, not on its role),
#: and the action name its refusals are audited under.
CALLS: dict[Permission, tuple[str, Call]] = {
    Permission.SEARCH: ("search", lambda g, m: g.Search(gateway_pb2.SearchRequest(), metadata=m)),
    Permission.DETECT: ("detect", lambda g, m: g.DetectFaces(gateway_pb2.DetectFacesRequest(), metadata=m)),
    Permission.ENROLL: ("enroll", lambda g, m: g.Enroll(gateway_pb2.EnrollRequest(), metadata=m)),
    Permission.DELETE: ("delete", lambda g, m: g.DeleteSubject(gateway_pb2.DeleteSubjectRequest(), metadata=m)),
    Permission.DELETE_RECORD: (
        "delete_record",
        lambda g, m: g.DeleteRecord(gateway_pb2.DeleteRecordRequest(), metadata=m),
    ),
    Permission.VERIFY_AUDIT: ("verify_audit", lambda g, m: g.VerifyAudit(gateway_pb2.VerifyAuditRequest(), metadata=m)),
    Permission.EXPORT_CASE: ("export_case", lambda g, m: g.ExportCase(gateway_pb2.ExportCaseRequest(), metadata=m)),
    Permission.LIST_AUDIT: (
        "list_audit",
        lambda g, m: g.ListAuditRecords(gateway_pb2.ListAuditRecordsRequest(limit=1), metadata=m),
    ),
    Permission.LIST_REVIEWS: (
        "review.list",
        lambda g, m: g.ListPendingReviews(gateway_pb2.ListPendingReviewsRequest(limit=1), metadata=m),
    ),
    Permission.SUBMIT_REVIEW: ("review", lambda g, m: g.SubmitReview(gateway_pb2.SubmitReviewRequest(), metadata=m)),
    Permission.SEED_PROFICIENCY: (
        "proficiency.seed",
        lambda g, m: g.SeedProficiencyTest(gateway_pb2.SeedProficiencyTestRequest(), metadata=m),
    ),
    Permission.RECORD_ANALYSIS: (
        "review.analysis",
        lambda g, m: g.RecordAnalysis(gateway_pb2.RecordAnalysisRequest(), metadata=m),
    ),
    Permission.GET_SEARCH: ("search.view", lambda g, m: g.GetSearch(gateway_pb2.GetSearchRequest(), metadata=m)),
    Permission.START_IMPORT: ("import.start", lambda g, m: g.StartImport(gateway_pb2.StartImportRequest(), metadata=m)),
    Permission.SUBMIT_IMPORT: (
        "import.submit",
        lambda g, m: g.SubmitImportItems(gateway_pb2.SubmitImportItemsRequest(), metadata=m),
    ),
    Permission.GET_IMPORT: ("import.status", lambda g, m: g.GetImport(gateway_pb2.GetImportRequest(), metadata=m)),
    Permission.LIST_IMPORT_RESULTS: (
        "import.results",
        lambda g, m: g.ListImportResults(gateway_pb2.ListImportResultsRequest(), metadata=m),
    ),
    Permission.START_REEMBED: (
        "reembed.start",
        lambda g, m: g.StartReembed(gateway_pb2.StartReembedRequest(), metadata=m),
    ),
    Permission.LIST_REEMBED_WORK: (
        "reembed.work",
        lambda g, m: g.ListReembedWork(gateway_pb2.ListReembedWorkRequest(), metadata=m),
    ),
    Permission.SWITCH_MODEL: (
        "reembed.switch",
        lambda g, m: g.SwitchGalleryModel(gateway_pb2.SwitchGalleryModelRequest(), metadata=m),
    ),
    Permission.GET_GALLERY_MODELS: (
        "gallery.models",
        lambda g, m: g.GetGalleryModels(gateway_pb2.GetGalleryModelsRequest(), metadata=m),
    ),
    Permission.GET_SEARCH_PHOTO: (
        "photo.view",
        lambda g, m: g.GetSearchPhoto(gateway_pb2.GetSearchPhotoRequest(), metadata=m),
    ),
    Permission.GET_RECORD_PHOTO: (
        "photo.read",
        lambda g, m: g.GetRecordPhoto(gateway_pb2.GetRecordPhotoRequest(), metadata=m),
    ),
    Permission.GET_CASE: ("case.view", lambda g, m: g.GetCase(gateway_pb2.GetCaseRequest(), metadata=m)),
    # Revokes the token it is called with: each call of this table has a fresh one.
    Permission.END_SESSION: ("session.end", lambda g, m: g.EndSession(gateway_pb2.EndSessionRequest(), metadata=m)),
}
TABLE = [(rpc, role) for rpc in Permission for role in ROLES]


def metadata_for(role: str, user: str = "") -> tuple[tuple[str, str]]:
    token = issue_token(load_private_key(TOKEN_KEY), user or f"table-{role}", [role], 600, LOCAL_ISSUER, AUDIENCE)
    return (("authorization", f"Bearer {token}"),)


def test_the_table_covers_every_rpc_of_the_service() -> None:
    rpcs = set(gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].methods_by_name)
    assert {permission.value for permission in CALLS} == rpcs


@pytest.mark.parametrize(("rpc", "role"), TABLE, ids=[f"{rpc.value}-{role}" for rpc, role in TABLE])
async def test_each_rpc_admits_exactly_its_roles(
    rpc: Permission, role: str, gateway: gateway_pb2_grpc.GatewayServiceStub
) -> None:
    _, call = CALLS[rpc]
    try:
        await call(gateway, metadata_for(role))
        code = grpc.StatusCode.OK
    except grpc.aio.AioRpcError as error:
        code = error.code()
    if role in RPC_ROLES[rpc]:
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), code
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("role", ROLES)
async def test_every_denial_is_audited(
    role: str, stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub
) -> None:
    user = f"audited-{role}"
    denied = set()
    for rpc in Permission:
        if role not in RPC_ROLES[rpc]:
            action, call = CALLS[rpc]
            with pytest.raises(grpc.aio.AioRpcError):
                await call(gateway, metadata_for(role, user))
            denied.add(action)

    async def all_audited() -> bool:
        refusals = {
            record.event.kind.removesuffix(".refused")
            for record in await audit_records(stack, actor=user)
            if record.event.kind.endswith(".refused")
            and json.loads(record.event.details_json)["code"] == "PERMISSION_DENIED"
        }
        return denied <= refusals

    await eventually(all_audited)

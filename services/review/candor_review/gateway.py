"""The web app's calls to the gateway: each one made with the signed-in user's own token, so the
gateway authorises and audits every call as that user, with the trace context carried along."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import grpc

from candor.audit.v1 import audit_pb2
from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_client import StaticToken, bearer_metadata, open_aio_channel
from candor_kit.telemetry import inject_headers


def open_channel(address: str, ca_file: str = "") -> grpc.aio.Channel:
    """A channel to the gateway (candor-client's: photo-sized messages; TLS checked against
    ``ca_file`` when given). No automatic retries: the desk's calls carry no request id, and a
    reviewer who sees an error submits again, which the gateway answers as the first."""
    return open_aio_channel(address, ca_file, retries=False)


class Gateway:
    """The gateway's API as one user sees it."""

    def __init__(self, channel: grpc.aio.Channel, token: str, timeout_s: float) -> None:
        self._stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        self._token = StaticToken(token)
        self._timeout = timeout_s

    def _metadata(self) -> Iterable[tuple[str, str]]:
        return (*bearer_metadata(self._token), *inject_headers().items())

    async def pending(self, request: gateway_pb2.ListPendingReviewsRequest) -> gateway_pb2.ListPendingReviewsResponse:
        """A page of the searches waiting for this user's review, with their total."""
        return await self._stub.ListPendingReviews(request, metadata=self._metadata(), timeout=self._timeout)

    async def search(self, search_id: str) -> gateway_pb2.SearchReview:
        """One search and its reviews, as this user may see them."""
        request = gateway_pb2.GetSearchRequest(search_id=search_id)
        return await self._stub.GetSearch(request, metadata=self._metadata(), timeout=self._timeout)

    async def photo(self, search_id: str, rank: int) -> gateway_pb2.Photo:
        """The probe (rank 0) or a candidate's photo; the gateway audits the view."""
        request = gateway_pb2.GetSearchPhotoRequest(search_id=search_id, rank=rank)
        return await self._stub.GetSearchPhoto(request, metadata=self._metadata(), timeout=self._timeout)

    async def decide(
        self, search_id: str, rank: int, decision: int, notes: str, features: Sequence[str]
    ) -> gateway_pb2.SubmitReviewResponse:
        """Record this user's conclusion on a candidate, with the features it rests on."""
        request = gateway_pb2.SubmitReviewRequest(
            search_id=search_id, rank=rank, decision=decision, notes=notes, features=list(features)
        )
        return await self._stub.SubmitReview(request, metadata=self._metadata(), timeout=self._timeout)

    async def analyse(self, search_id: str, sufficient: bool, notes: str) -> gateway_pb2.RecordAnalysisResponse:
        """Record this user's analysis of a search's probe."""
        request = gateway_pb2.RecordAnalysisRequest(search_id=search_id, sufficient=sufficient, notes=notes)
        return await self._stub.RecordAnalysis(request, metadata=self._metadata(), timeout=self._timeout)

    async def end_session(self) -> None:
        """Revoke this user's token at the gateway (sign-out): the session cookie dies with it."""
        await self._stub.EndSession(gateway_pb2.EndSessionRequest(), metadata=self._metadata(), timeout=self._timeout)

    async def case(self, case_number: str) -> gateway_pb2.CaseView:
        """A case's searches and review trails."""
        request = gateway_pb2.GetCaseRequest(case_number=case_number)
        return await self._stub.GetCase(request, metadata=self._metadata(), timeout=self._timeout)

    async def audit_records(
        self, since: str | None, until: str, kinds: Sequence[str] = ()
    ) -> list[audit_pb2.AuditRecord]:
        """Every audit record of a period (RFC 3339 bounds; from the chain's start when ``since`` is
        None), of the given kinds or all, a page at a time."""
        records: list[audit_pb2.AuditRecord] = []
        while True:
            request = gateway_pb2.ListAuditRecordsRequest(
                after_sequence=records[-1].sequence if records else 0, limit=1000, kinds=list(kinds)
            )
            if since is not None:
                request.since.FromJsonString(since)
            request.until.FromJsonString(until)
            page = await self._stub.ListAuditRecords(request, metadata=self._metadata(), timeout=self._timeout)
            records.extend(page.records)
            if not page.more or not page.records:
                return records

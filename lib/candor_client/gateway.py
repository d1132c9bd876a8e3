"""The gateway's public API as a synchronous client: every call with the caller's current bearer
token and a deadline; the calls that change something carry a client request id, so gRPC's own
retries (candor_client.channel) never do them twice."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from candor.audit.v1 import audit_pb2
from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor.ingest.v1 import ingest_pb2
from candor.matcher.v1 import matcher_pb2
from candor_client.channel import open_channel
from candor_client.tokens import StaticToken, TokenSource, bearer_metadata


def new_request_id() -> str:
    """A fresh client request id for one logical call (its retries reuse it)."""
    return uuid.uuid4().hex


class GatewayClient:
    """Calls the gateway with a bearer token: a person's (a string) or a service account's
    (``ClientCredentials``, renewed before it expires)."""

    def __init__(
        self, address: str, token: str | TokenSource, timeout_s: float = 120.0, ca_file: str | Path = ""
    ) -> None:
        self._channel = open_channel(address, ca_file)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self._tokens: TokenSource = StaticToken(token) if isinstance(token, str) else token
        self._timeout = timeout_s

    @property
    def _metadata(self) -> tuple[tuple[str, str]]:
        """The current token, asked for on every call."""
        return bearer_metadata(self._tokens)

    def enroll(
        self,
        image: Path,
        subject_id: str,
        face_index: int | None = None,
        metadata: dict[str, str] | None = None,
        request_id: str = "",
    ) -> gateway_pb2.EnrollResponse:
        """Enrol one face of a photo; the gallery keeps the photo's absolute path as its reference,
        so the record can be re-embedded with another model later. ``request_id`` (new when empty)
        makes a retry of this call answer as the first did."""
        request = gateway_pb2.EnrollRequest(
            image=image.read_bytes(),
            subject_id=subject_id,
            metadata=metadata or {},
            image_ref=str(image.resolve())[:1000],
            client_request_id=request_id or new_request_id(),
        )
        if face_index is not None:
            request.face_index = face_index
        return self._stub.Enroll(request, metadata=self._metadata, timeout=self._timeout)

    def search(
        self,
        image: Path | bytes,
        case_number: str,
        purpose: str,
        face_index: int | None = None,
        max_candidates: int = 0,
        authorisation: str = "",
        request_id: str = "",
    ) -> gateway_pb2.SearchResponse:
        """Search the gallery with a probe photo. ``request_id`` (new when empty) makes a retry of
        this search return the first one's answer, with no second search or audit record."""
        data = image if isinstance(image, bytes) else image.read_bytes()
        request = gateway_pb2.SearchRequest(
            probe_image=data,
            case_number=case_number,
            purpose=purpose,
            max_candidates=max_candidates,
            authorisation_reference=authorisation,
            client_request_id=request_id or new_request_id(),
        )
        if face_index is not None:
            request.face_index = face_index
        return self._stub.Search(request, metadata=self._metadata, timeout=self._timeout)

    def pending_reviews(self, **filters: Any) -> gateway_pb2.ListPendingReviewsResponse:
        """One page of the searches whose candidates wait for this caller's review
        (``ListPendingReviewsRequest``'s fields: limit, offset, order, case_prefix, ...)."""
        request = gateway_pb2.ListPendingReviewsRequest(**filters)
        return self._stub.ListPendingReviews(request, metadata=self._metadata, timeout=self._timeout)

    def all_pending_reviews(self, **filters: Any) -> tuple[list[gateway_pb2.SearchReview], int]:
        """Every search waiting for this caller's review that matches ``filters``, page after
        page, and the total the gateway counted."""
        searches: list[gateway_pb2.SearchReview] = []
        while True:
            page = self.pending_reviews(**filters, offset=len(searches), limit=500)
            searches.extend(page.searches)
            if not page.more or not page.searches:
                return searches, page.total

    def submit_review(
        self, search_id: str, rank: int, decision: int, notes: str = "", features: Sequence[str] = ()
    ) -> gateway_pb2.SubmitReviewResponse:
        """One conclusion (a ``gateway_pb2.Decision``) on one candidate of a search, with the
        facial features it rests on."""
        request = gateway_pb2.SubmitReviewRequest(
            search_id=search_id, rank=rank, decision=decision, notes=notes, features=list(features)
        )
        return self._stub.SubmitReview(request, metadata=self._metadata, timeout=self._timeout)

    def seed_proficiency_test(
        self, request: gateway_pb2.SeedProficiencyTestRequest
    ) -> gateway_pb2.SeedProficiencyTestResponse:
        """A supervisor's known-answer comparison, put in reviewers' queues (under a new client
        request id when it has none, so a retry seeds it once)."""
        if not request.client_request_id:
            stamped = gateway_pb2.SeedProficiencyTestRequest()
            stamped.CopyFrom(request)
            stamped.client_request_id = new_request_id()
            request = stamped
        return self._stub.SeedProficiencyTest(request, metadata=self._metadata, timeout=self._timeout)

    def record_analysis(self, search_id: str, sufficient: bool, notes: str = "") -> gateway_pb2.RecordAnalysisResponse:
        """This reviewer's analysis of a search's probe, before its candidates are shown."""
        request = gateway_pb2.RecordAnalysisRequest(search_id=search_id, sufficient=sufficient, notes=notes)
        return self._stub.RecordAnalysis(request, metadata=self._metadata, timeout=self._timeout)

    def get_search(self, search_id: str) -> gateway_pb2.SearchReview:
        """A search and its review state, as this caller may see it."""
        request = gateway_pb2.GetSearchRequest(search_id=search_id)
        return self._stub.GetSearch(request, metadata=self._metadata, timeout=self._timeout)

    def search_photo(self, search_id: str, rank: int) -> gateway_pb2.Photo:
        """The probe (rank 0) or a candidate's photo of a search, for its reviewers (audited)."""
        request = gateway_pb2.GetSearchPhotoRequest(search_id=search_id, rank=rank)
        return self._stub.GetSearchPhoto(request, metadata=self._metadata, timeout=self._timeout)

    def faces(self, image: Path) -> gateway_pb2.DetectFacesResponse:
        """List the faces of a photo."""
        request = gateway_pb2.DetectFacesRequest(image=image.read_bytes())
        return self._stub.DetectFaces(request, metadata=self._metadata, timeout=self._timeout)

    def record_photo(self, record_id: str) -> gateway_pb2.Photo:
        """An enrolled record's photo from the photo store (gallery admins; audited)."""
        request = gateway_pb2.GetRecordPhotoRequest(record_id=record_id)
        return self._stub.GetRecordPhoto(request, metadata=self._metadata, timeout=self._timeout)

    def delete_subject(self, subject_id: str, reason: str, request_id: str = "") -> gateway_pb2.DeleteSubjectResponse:
        """Expunge a subject (``request_id``, new when empty: a retry answers as the first did)."""
        request = gateway_pb2.DeleteSubjectRequest(
            subject_id=subject_id, reason=reason, client_request_id=request_id or new_request_id()
        )
        return self._stub.DeleteSubject(request, metadata=self._metadata, timeout=self._timeout)

    def delete_record(self, record_id: str, reason: str) -> gateway_pb2.DeleteRecordResponse:
        """Expunge one enrolled photo."""
        request = gateway_pb2.DeleteRecordRequest(record_id=record_id, reason=reason)
        return self._stub.DeleteRecord(request, metadata=self._metadata, timeout=self._timeout)

    def verify_audit(self, kept: list[audit_pb2.Checkpoint] | None = None) -> audit_pb2.VerifyResponse:
        """Verify the audit chain, with checkpoints the caller kept."""
        request = gateway_pb2.VerifyAuditRequest(checkpoints=kept or [])
        return self._stub.VerifyAudit(request, metadata=self._metadata, timeout=self._timeout)

    def export_case(self, case_number: str) -> gateway_pb2.ExportCaseResponse:
        """The discovery export of one case."""
        request = gateway_pb2.ExportCaseRequest(case_number=case_number)
        return self._stub.ExportCase(request, metadata=self._metadata, timeout=self._timeout)

    def audit_records(
        self, since: Timestamp | None, until: Timestamp, kinds: Sequence[str] = ()
    ) -> list[audit_pb2.AuditRecord]:
        """Every audit record of a period (from the start of the chain when ``since`` is None), of
        the given kinds or all, oldest first, fetched a page at a time."""
        records: list[audit_pb2.AuditRecord] = []
        while True:
            request = gateway_pb2.ListAuditRecordsRequest(
                until=until, after_sequence=records[-1].sequence if records else 0, limit=1000, kinds=list(kinds)
            )
            if since is not None:
                request.since.CopyFrom(since)
            page = self._stub.ListAuditRecords(request, metadata=self._metadata, timeout=self._timeout)
            records.extend(page.records)
            if not page.more or not page.records:
                return records

    def start_import(self, import_id: str, source: str, total: int, model_id: str = "") -> gateway_pb2.ImportStatus:
        """Start a bulk import (with the gallery's active model unless ``model_id`` names the one it
        is being re-embedded into), or resume the one with this id."""
        request = gateway_pb2.StartImportRequest(import_id=import_id, source=source, total=total, model_id=model_id)
        return self._stub.StartImport(request, metadata=self._metadata, timeout=self._timeout)

    def submit_import(
        self, import_id: str, items: list[gateway_pb2.ImportItem]
    ) -> gateway_pb2.SubmitImportItemsResponse:
        """Queue a batch of an import's photos."""
        request = gateway_pb2.SubmitImportItemsRequest(import_id=import_id, items=items)
        return self._stub.SubmitImportItems(request, metadata=self._metadata, timeout=self._timeout)

    def import_status(self, import_id: str, with_done_items: bool = False) -> gateway_pb2.ImportStatus:
        """An import's progress."""
        request = gateway_pb2.GetImportRequest(import_id=import_id, with_done_items=with_done_items)
        return self._stub.GetImport(request, metadata=self._metadata, timeout=self._timeout)

    def import_results(self, import_id: str, problems_only: bool = False) -> list[ingest_pb2.ItemResult]:
        """Every result of an import (or only its rejections and failures), in item order."""
        results: list[ingest_pb2.ItemResult] = []
        request = gateway_pb2.ListImportResultsRequest(import_id=import_id, problems_only=problems_only, limit=1000)
        while True:
            page = self._stub.ListImportResults(request, metadata=self._metadata, timeout=self._timeout).results
            results.extend(page)
            if len(page) < request.limit:
                return results
            request.after_item = page[-1].item.item

    def gallery_models(self) -> matcher_pb2.GalleryModels:
        """The gallery's active model and any re-embedding under way."""
        request = gateway_pb2.GetGalleryModelsRequest()
        return self._stub.GetGalleryModels(request, metadata=self._metadata, timeout=self._timeout)

    def start_reembed(self, model_id: str) -> matcher_pb2.GalleryModels:
        """Begin (or continue) re-embedding the gallery into ``model_id``."""
        request = gateway_pb2.StartReembedRequest(model_id=model_id)
        return self._stub.StartReembed(request, metadata=self._metadata, timeout=self._timeout)

    def reembed_work(self, model_id: str) -> list[matcher_pb2.GalleryRecord]:
        """Every record the new model's collection does not hold yet."""
        records: list[matcher_pb2.GalleryRecord] = []
        request = gateway_pb2.ListReembedWorkRequest(model_id=model_id, limit=1000)
        while True:
            page = self._stub.ListReembedWork(request, metadata=self._metadata, timeout=self._timeout)
            records.extend(page.records)
            if not page.next:
                return records
            request.after = page.next

    def switch_model(self, model_id: str, reason: str, left_out: list[str]) -> matcher_pb2.GalleryModels:
        """Make ``model_id`` the gallery's active model, leaving out the records named."""
        request = gateway_pb2.SwitchGalleryModelRequest(model_id=model_id, reason=reason, excused_record_ids=left_out)
        # The switch checks every record of both collections.
        return self._stub.SwitchGalleryModel(request, metadata=self._metadata, timeout=max(self._timeout, 600.0))

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The gateway service: Candor's public gRPC API."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import structlog

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor.ingest.v1 import ingest_pb2
from candor.matcher.v1 import matcher_pb2
from candor_gateway.calibration import CalibrationGate
from candor_gateway.idempotency import Operation, RequestRegister
from candor_gateway.imports import ImportDesk
from candor_gateway.photos import PhotoStore
from candor_gateway.policy import PolicyHolder
from candor_gateway.quota import SharedCounts
from candor_gateway.reembed import ReembedDesk
from candor_gateway.revocations import TokenRevocations, sign_out_event_id
from candor_gateway.sweeps import run_sweeps
from candor_gateway.workflow import Workflow
from candor_kit import (
    AuditPublisher,
    CandorError,
    CommonSettings,
    ConfigError,
    EnvReader,
    Overloaded,
    ServiceHost,
    Unauthenticated,
    catalogue,
    current_trace_id,
    ensure_audit_stream,
    metrics,
    rpc,
)
from candor_kit.aes_keys import read_aes_key
from candor_kit.ingest import dead_letter_exhausted
from candor_kit.model_registry import ModelRegistry
from candor_kit.policy import LEAD_NOTICE, Rule, load_policy
from candor_kit.tokens import Principal, TokenVerifier, bearer_token, read_token_verifier

SERVICE = "candor.gateway.v1.GatewayService"
T = TypeVar("T")
DeskCall = Callable[[Principal], Awaitable[T]]
log = structlog.get_logger("candor.gateway")


@dataclass(frozen=True)
class GatewaySettings:
    """Gateway configuration, from the environment."""

    common: CommonSettings
    tokens: TokenVerifier
    policy: PolicyHolder
    max_image_bytes: int
    min_enrol_face_px: int
    max_inflight: int
    calibration: CalibrationGate
    photos: PhotoStore
    audit_stream_replicas: int = 1
    photo_store_replicas: int = 1
    policy_reload_s: float = 10.0
    retention_sweep_s: float = 3600.0
    min_enrol_blur: float = 10.0
    import_backlog: int = 2000
    ingest_stream_replicas: int = 1
    hedge_after_s: float = 5.0

    @classmethod
    def from_env(cls, env: EnvReader | None = None) -> GatewaySettings:
        """Read the gateway settings (catalogue.SERVICES["gateway"]); raises ConfigError naming every bad value."""
        env = env or EnvReader()
        common = CommonSettings.read("gateway", env)
        tokens = read_token_verifier(env)
        photos = read_photo_store(env)
        policy = read_policy(env)
        max_image_bytes = env.get(catalogue.GATEWAY_MAX_IMAGE_BYTES)
        if max_image_bytes + 4096 > common.max_message_bytes:
            env.problem("CANDOR_GATEWAY_MAX_IMAGE_BYTES must leave room under CANDOR_MAX_MESSAGE_BYTES")
        min_face = env.get(catalogue.GATEWAY_MIN_ENROL_FACE_PX)
        max_inflight = env.get(catalogue.GATEWAY_MAX_INFLIGHT)
        registry_dir = env.get(catalogue.GATEWAY_MODEL_REGISTRY)
        allow = env.get(catalogue.GATEWAY_ALLOW_UNCALIBRATED)
        required_rule = env.get(catalogue.GATEWAY_CALIBRATION_RULE)
        stream_replicas = env.get(catalogue.AUDIT_STREAM_REPLICAS)
        policy_reload_s = env.get(catalogue.GATEWAY_POLICY_RELOAD_S)
        retention_sweep_s = env.get(catalogue.GATEWAY_RETENTION_SWEEP_S)
        min_enrol_blur = env.get(catalogue.GATEWAY_MIN_ENROL_BLUR)
        import_backlog = env.get(catalogue.GATEWAY_IMPORT_BACKLOG)
        ingest_replicas = env.get(catalogue.INGEST_STREAM_REPLICAS)
        photo_replicas = env.get(catalogue.PHOTO_STORE_REPLICAS)
        hedge_after_s = env.get(catalogue.GATEWAY_HEDGE_AFTER_S)
        if hedge_after_s >= common.request_timeout_s:
            env.problem(
                f"CANDOR_GATEWAY_HEDGE_AFTER_S={hedge_after_s:g} is not under CANDOR_REQUEST_TIMEOUT_S="
                f"{common.request_timeout_s:g}, so a detection would never be asked again; lower it, or set 0"
            )
        env.done()
        return cls(
            common=common,
            tokens=tokens,  # type: ignore[arg-type]  # None only when env.done() has raised
            policy=policy,  # type: ignore[arg-type]
            photos=photos,  # type: ignore[arg-type]
            photo_store_replicas=photo_replicas,
            policy_reload_s=policy_reload_s,
            retention_sweep_s=retention_sweep_s,
            max_image_bytes=max_image_bytes,
            min_enrol_face_px=min_face,
            max_inflight=max_inflight,
            calibration=CalibrationGate(
                ModelRegistry(Path(registry_dir)) if registry_dir else None, allow == "true", required_rule
            ),
            audit_stream_replicas=stream_replicas,
            min_enrol_blur=min_enrol_blur,
            import_backlog=import_backlog,
            ingest_stream_replicas=ingest_replicas,
            hedge_after_s=hedge_after_s,
        )


def read_photo_store(env: EnvReader) -> PhotoStore | None:
    """The encrypted store of gallery photos and retained probes, with its key."""
    key_file = env.get(catalogue.GATEWAY_PHOTO_KEY_FILE)
    if not key_file:
        return None
    try:
        return PhotoStore(read_aes_key(Path(key_file), "photo key"))
    except ConfigError as exc:
        env.problem(f"CANDOR_GATEWAY_PHOTO_KEY_FILE: {exc}")
        return None


def read_policy(env: EnvReader) -> PolicyHolder | None:
    """The validated policy file."""
    path = env.get(catalogue.GATEWAY_POLICY_FILE)
    if not path:
        return None
    try:
        return PolicyHolder(load_policy(Path(path)))
    except ConfigError as exc:
        env.problem(f"CANDOR_GATEWAY_POLICY_FILE: {exc}")
        return None


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    """gRPC adapter: authenticates, then hands the request to the Workflow."""

    def __init__(
        self,
        workflow: Workflow,
        tokens: TokenVerifier,
        imports: ImportDesk,
        reembed: ReembedDesk,
        revocations: TokenRevocations,
        requests: RequestRegister,
    ) -> None:
        self._workflow = workflow
        self._tokens = tokens
        self._imports = imports
        self._reembed = reembed
        self._revocations = revocations
        self._requests = requests

    async def _principal(
        self,
        context: grpc.aio.ServicerContext,
        action: str,
        case: str = "",
        purpose: str = "",
        *,
        revoked_too: bool = False,
    ) -> Principal:
        """The caller, from a token that is valid and (unless ``revoked_too``) not revoked; a refusal
        is audited under ``action``."""
        authorization = dict(context.invocation_metadata() or ()).get("authorization")
        try:
            principal = self._tokens.authenticate(authorization)
            if not revoked_too and await self._revocations.revoked(bearer_token(authorization)):
                raise Unauthenticated("the token was revoked when its user signed out; sign in again")
        except Unauthenticated as error:
            await self._workflow.audit_refusal(action, error, "anonymous", case, purpose)
            raise
        if principal.service_account:
            await self._workflow.note_service_account(principal)
        return principal

    @rpc(SERVICE, to_the_end="session end")
    async def EndSession(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.EndSessionRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.EndSessionResponse:
        # A sign-out is done once, however often it is sent: its end is recorded under one event id
        # per token, first, then the token revoked. A gateway killed between the two answered nothing,
        # and the retry (of a token revoked or not) records nothing twice and finishes both.
        principal = await self._principal(context, "session.end", revoked_too=True)
        token = bearer_token(dict(context.invocation_metadata() or ()).get("authorization"))
        await self._workflow.audit_session_ended(principal, sign_out_event_id(token))
        await self._revocations.revoke(token)
        return gateway_pb2.EndSessionResponse()

    @rpc(SERVICE)
    async def Search(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SearchResponse:
        principal = await self._principal(context, "search", request.case_number, request.purpose)

        async def search(operation: Operation) -> gateway_pb2.SearchResponse:
            matched = await self._workflow.search(principal, request, operation.id)
            return gateway_pb2.SearchResponse(
                search_id=matched.search_id,
                candidates=matched.candidates,
                model=matched.model,
                notice=LEAD_NOTICE,
                probe_sha256=matched.probe_sha256,
                trace_id=current_trace_id(),
                probe_quality=matched.quality,
            )

        return await self._requests.once(principal.user, request, search, gateway_pb2.SearchResponse)

    @rpc(SERVICE, to_the_end="enrolment")
    async def Enroll(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.EnrollRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.EnrollResponse:
        principal = await self._principal(context, "enroll")

        async def enroll(operation: Operation) -> gateway_pb2.EnrollResponse:
            enrolled, model, quality = await self._workflow.gallery.enroll(
                principal,
                request.image,
                request.subject_id,
                request.face_index if request.HasField("face_index") else None,
                dict(request.metadata),
                request.image_ref,
                operation,
            )
            return gateway_pb2.EnrollResponse(
                record_id=enrolled.record_id, created=enrolled.created, model=model, quality=quality
            )

        # Runs to its end: the photo, the record and its audit record; cut between them, a record
        # would be left without its photo.
        return await self._requests.once(principal.user, request, enroll, gateway_pb2.EnrollResponse)

    @rpc(SERVICE)
    async def DetectFaces(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.DetectFacesRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DetectFacesResponse:
        principal = await self._principal(context, "detect")
        detected = await self._workflow.list_faces(principal, request.image)
        return gateway_pb2.DetectFacesResponse(
            faces=detected.faces, image_width=detected.image_width, image_height=detected.image_height
        )

    @rpc(SERVICE, to_the_end="expunge")
    async def DeleteSubject(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.DeleteSubjectRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteSubjectResponse:
        principal = await self._principal(context, "delete")

        async def delete(operation: Operation) -> gateway_pb2.DeleteSubjectResponse:
            return await self._workflow.gallery.delete_subject(principal, request.subject_id, request.reason, operation)

        # Runs to its end: the records, the photos and the audit record, all of them or none begun.
        return await self._requests.once(principal.user, request, delete, gateway_pb2.DeleteSubjectResponse)

    @rpc(SERVICE, to_the_end="record deletion")
    async def DeleteRecord(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.DeleteRecordRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteRecordResponse:
        principal = await self._principal(context, "delete_record")
        deleted = await self._workflow.gallery.delete_record(principal, request.record_id, request.reason)
        return gateway_pb2.DeleteRecordResponse(deleted=deleted.deleted, subject_id=deleted.subject_id)

    @rpc(SERVICE)
    async def VerifyAudit(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.VerifyAuditRequest, context: grpc.aio.ServicerContext
    ):  # type: ignore[no-untyped-def]
        principal = await self._principal(context, "verify_audit")
        return await self._workflow.audits.verify_audit(principal, request.checkpoints)

    @rpc(SERVICE)
    async def ExportCase(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ExportCaseRequest, context: grpc.aio.ServicerContext
    ):  # type: ignore[no-untyped-def]
        principal = await self._principal(context, "export_case", case=request.case_number)
        return await self._workflow.audits.export_case(principal, request.case_number)

    @rpc(SERVICE)
    async def ListAuditRecords(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListAuditRecordsRequest, context: grpc.aio.ServicerContext
    ):  # type: ignore[no-untyped-def]
        principal = await self._principal(context, "list_audit")
        return await self._workflow.audits.list_audit_records(principal, request)

    @rpc(SERVICE)
    async def ListPendingReviews(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListPendingReviewsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListPendingReviewsResponse:
        principal = await self._principal(context, "review.list")
        return await self._workflow.reviews.list_pending(principal, request)

    @rpc(SERVICE, to_the_end="review")
    async def SubmitReview(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.SubmitReviewRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SubmitReviewResponse:
        principal = await self._principal(context, "review")
        # Runs to its end: the review, then the candidate's outcome it decides (a lead the case
        # system hears of from the feed).
        return await self._workflow.reviews.submit(principal, request)

    @rpc(SERVICE, to_the_end="analysis")
    async def RecordAnalysis(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.RecordAnalysisRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RecordAnalysisResponse:
        principal = await self._principal(context, "review.analysis")
        # An insufficient probe's analysis concludes each candidate waiting on it: all, or none begun.
        return await self._workflow.reviews.record_analysis(principal, request)

    @rpc(SERVICE, to_the_end="proficiency test seeding")
    async def SeedProficiencyTest(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.SeedProficiencyTestRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SeedProficiencyTestResponse:
        principal = await self._principal(context, "proficiency.seed")

        async def seed(operation: Operation) -> gateway_pb2.SeedProficiencyTestResponse:
            return await self._workflow.proficiency.seed(principal, request, operation.id)

        # A retry with the request's id answers as the first call did: one test in the queues.
        return await self._requests.once(principal.user, request, seed, gateway_pb2.SeedProficiencyTestResponse)

    @rpc(SERVICE)
    async def GetSearch(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.GetSearchRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SearchReview:
        principal = await self._principal(context, "search.view")
        return await self._workflow.reviews.get_search(principal, request.search_id, request.include_probe)

    @rpc(SERVICE)
    async def GetSearchPhoto(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.GetSearchPhotoRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.Photo:
        principal = await self._principal(context, "photo.view")
        return await self._workflow.reviews.get_search_photo(principal, request.search_id, request.rank)

    @rpc(SERVICE)
    async def GetRecordPhoto(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.GetRecordPhotoRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.Photo:
        principal = await self._principal(context, "photo.read")
        return await self._workflow.gallery.record_photo(principal, request.record_id)

    @rpc(SERVICE)
    async def GetCase(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.GetCaseRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.CaseView:
        principal = await self._principal(context, "case.view", case=request.case_number)
        return await self._workflow.reviews.get_case(principal, request.case_number)

    async def _audited_call(self, context: grpc.aio.ServicerContext, action: str, call: DeskCall[T]) -> T:
        """Authenticate, run an import or re-embedding use case, and audit a refusal (not a busy signal)."""
        principal = await self._principal(context, action)
        try:
            return await call(principal)
        except Overloaded:
            raise
        except CandorError as error:
            await self._workflow.audit_refusal(action, error, principal.user)
            raise

    @rpc(SERVICE, to_the_end="import start")
    async def StartImport(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.StartImportRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ImportStatus:
        return await self._audited_call(context, "import.start", lambda p: self._imports.start(p, request))

    @rpc(SERVICE, to_the_end="import submission")
    async def SubmitImportItems(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.SubmitImportItemsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SubmitImportItemsResponse:
        return await self._audited_call(context, "import.submit", lambda p: self._imports.submit(p, request))

    @rpc(SERVICE)
    async def GetImport(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.GetImportRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ImportStatus:
        return await self._audited_call(context, "import.status", lambda p: self._imports.status(p, request))

    @rpc(SERVICE)
    async def ListImportResults(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListImportResultsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListImportResultsResponse:
        return await self._audited_call(context, "import.results", lambda p: self._imports.results(p, request))

    @rpc(SERVICE, to_the_end="re-embedding start")
    async def StartReembed(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.StartReembedRequest, context: grpc.aio.ServicerContext
    ) -> matcher_pb2.GalleryModels:
        return await self._audited_call(context, "reembed.start", lambda p: self._reembed.start(p, request))

    @rpc(SERVICE)
    async def ListReembedWork(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.ListReembedWorkRequest, context: grpc.aio.ServicerContext
    ) -> matcher_pb2.ListMissingRecordsResponse:
        return await self._audited_call(context, "reembed.work", lambda p: self._reembed.work(p, request))

    @rpc(SERVICE, to_the_end="model switch")
    async def SwitchGalleryModel(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.SwitchGalleryModelRequest, context: grpc.aio.ServicerContext
    ) -> matcher_pb2.GalleryModels:
        return await self._audited_call(context, "reembed.switch", lambda p: self._reembed.switch(p, request))

    @rpc(SERVICE)
    async def GetGalleryModels(  # noqa: N802 - gRPC method name
        self, request: gateway_pb2.GetGalleryModelsRequest, context: grpc.aio.ServicerContext
    ) -> matcher_pb2.GalleryModels:
        return await self._audited_call(context, "gallery.models", self._reembed.models)


async def serve(settings: GatewaySettings, stop: asyncio.Event) -> None:
    """Run the gateway until ``stop`` is set."""
    async with ServiceHost(settings.common, [SERVICE]) as host:
        assert host.bus is not None
        for rule in Rule.names():  # each rule's refusal count exists from the start, at 0
            metrics.REFUSALS.labels(rule)
        await ensure_audit_stream(host.bus, settings.audit_stream_replicas)
        await settings.photos.open(host.bus, settings.photo_store_replicas)
        audit = AuditPublisher(host.bus, "gateway")
        search_counts = SharedCounts(host.bus, settings.photo_store_replicas)
        await search_counts.open()
        workflow = Workflow(
            host.bus,
            audit,
            settings.policy,
            settings.calibration,
            settings.common.request_timeout_s,
            settings.max_image_bytes,
            settings.min_enrol_face_px,
            settings.photos,
            settings.max_inflight,
            settings.hedge_after_s,
            search_counts,
        )
        rules = ingest_pb2.ImportRules(min_face_px=settings.min_enrol_face_px, min_blur=settings.min_enrol_blur)
        routes = workflow.routes
        imports = ImportDesk(
            host.bus,
            audit,
            rules,
            settings.max_image_bytes,
            settings.import_backlog,
            routes,
            settings.ingest_stream_replicas,
            settings.photos,
        )
        await imports.open()
        revocations = TokenRevocations(host.bus, settings.tokens.longest_life_s, settings.photo_store_replicas)
        await revocations.open()
        requests = RequestRegister(host.bus, settings.common.request_timeout_s, settings.photo_store_replicas)
        await requests.open()
        reembed = ReembedDesk(host.bus, audit, settings.calibration, routes, settings.common.request_timeout_s)
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
            GatewayServicer(workflow, settings.tokens, imports, reembed, revocations, requests), host.grpc.server
        )
        await host.start_grpc()
        await audit.publish(
            "config.loaded",
            actor="system",
            details={
                "service": "gateway",
                "policy_sha256": settings.policy.loaded.sha256,
                "max_image_bytes": settings.max_image_bytes,
                "max_inflight": settings.max_inflight,
                "allow_uncalibrated_models": settings.calibration.allow_uncalibrated,
                "required_calibration_rule": settings.calibration.required_rule,
                "calibrations": settings.calibration.summary(),
                "photo_store": settings.photos.bucket_name,
            },
        )
        await settings.policy.announce(audit)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(settings.policy.watch(audit, settings.policy_reload_s, stop))
            # Each import item whose deliveries ran out is dead-lettered, so its import still finishes.
            tasks.create_task(dead_letter_exhausted(host.bus, audit, settings.ingest_stream_replicas, stop))
            tasks.create_task(
                run_sweeps(
                    settings.photos, workflow.reviews, settings.policy, audit, imports, settings.retention_sweep_s, stop
                )
            )
            await host.mark_serving()
            await stop.wait()
        await requests.close()
        await routes.close()

"""The matcher service: gRPC and NATS adapters around the Gallery."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import structlog

from candor.common.v1 import common_pb2
from candor.matcher.v1 import matcher_pb2, matcher_pb2_grpc
from candor_kit import AuditPublisher, CommonSettings, EnvReader, InvalidInput, ServiceHost, catalogue, rpc, subjects
from candor_kit.identifiers import check_subject_id
from candor_kit.ingest import MATCH, WorkerSettings, open_bucket, running_worker
from candor_matcher.edge_backend import EdgeBackend
from candor_matcher.gallery import Gallery, GalleryBackend, GalleryModel
from candor_matcher.ingest import MatchStage
from candor_matcher.server_backend import QdrantServerBackend
from candor_matcher.tombstones import Tombstones

ENROLL_SUBJECT = subjects.MATCH_ENROLL
SEARCH_SUBJECT = subjects.MATCH_SEARCH
DELETE_SUBJECT = subjects.MATCH_DELETE_SUBJECT
DELETE_RECORD = subjects.MATCH_DELETE_RECORD
GALLERY_SUBJECT = subjects.MATCH_GALLERY
MAX_LIMIT = 200
log = structlog.get_logger("candor.matcher")


@dataclass(frozen=True)
class MatcherSettings:
    """Matcher configuration, from the environment."""

    common: CommonSettings
    backend: str
    data_dir: Path | None = None
    qdrant_url: str = ""
    qdrant_api_key: str = field(default="", repr=False)
    shard_number: int = 1
    replication_factor: int = 1
    optimize_after_s: float = 5.0
    worker: WorkerSettings = field(default_factory=WorkerSettings)

    @classmethod
    def from_env(cls, env: EnvReader | None = None) -> MatcherSettings:
        """Read the matcher settings (catalogue.SERVICES["matcher"]); raises ConfigError naming every bad value."""
        env = env or EnvReader()
        common = CommonSettings.read("matcher", env)
        backend = env.get(catalogue.MATCHER_BACKEND)
        shared = {
            "optimize_after_s": env.get(catalogue.MATCHER_OPTIMIZE_AFTER_S),
            "worker": WorkerSettings.read(env),
        }
        if backend == "edge":
            settings = cls(common=common, backend=backend, data_dir=Path(env.get(catalogue.MATCHER_DATA_DIR)), **shared)
        else:
            url = env.get(catalogue.QDRANT_URL)
            if url and not url.startswith(("http://", "https://")):
                env.problem("CANDOR_QDRANT_URL must start with http:// or https://")
            api_key = env.get(catalogue.QDRANT_API_KEY)
            if url.startswith("http://") and api_key:
                env.problem("CANDOR_QDRANT_API_KEY over plain http:// would send the key in the clear; use https://")
            settings = cls(
                common=common,
                backend=backend,
                qdrant_url=url,
                qdrant_api_key=api_key,
                shard_number=env.get(catalogue.QDRANT_SHARDS),
                replication_factor=env.get(catalogue.QDRANT_REPLICAS),
                **shared,
            )
        env.done()
        return settings

    def build_backend(self) -> GalleryBackend:
        """The configured backend."""
        if self.backend == "server":
            from qdrant_client import QdrantClient

            client = QdrantClient(url=self.qdrant_url, api_key=self.qdrant_api_key or None, timeout=30)
            return QdrantServerBackend(client, self.shard_number, self.replication_factor)
        assert self.data_dir is not None
        return EdgeBackend(self.data_dir)


class MatchingService:
    """Runs gallery operations off the event loop."""

    def __init__(self, gallery: Gallery, tombstones: Tombstones) -> None:
        self._gallery = gallery
        self._tombstones = tombstones

    async def enroll(self, request: matcher_pb2.EnrollRequest) -> matcher_pb2.EnrollResponse:
        """Add one face to the subject's records."""
        check_subject_id(request.subject_id)
        if len(request.image_sha256) != 64:
            raise InvalidInput("image_sha256 must be 64 hex digits")
        index = self._gallery.index_for(GalleryModel.from_ref(request.model))
        record_id, created = await asyncio.to_thread(
            index.enroll,
            request.subject_id,
            request.image_sha256,
            list(request.embedding.values),
            dict(request.metadata),
        )
        log.info("face_enrolled", record_id=record_id, created=created, model=index.model.id)
        return matcher_pb2.EnrollResponse(record_id=record_id, created=created)

    async def search(self, request: matcher_pb2.SearchRequest) -> matcher_pb2.SearchResponse:
        """Ranked candidates, one per subject, within the distance limit."""
        if not 1 <= request.limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
        if request.max_distance <= 0:
            raise InvalidInput("max_distance must be positive")
        model = GalleryModel.from_ref(request.model)
        index = self._gallery.index_to_search(model)
        if index is None:  # nothing enrolled yet
            return matcher_pb2.SearchResponse()
        hits = await asyncio.to_thread(
            index.search, list(request.embedding.values), request.limit, request.max_distance
        )
        log.info("gallery_searched", candidates=len(hits), model=model.id)
        return matcher_pb2.SearchResponse(
            candidates=[
                common_pb2.Candidate(
                    rank=rank,
                    subject_id=hit.subject_id,
                    distance=hit.distance,
                    record_id=hit.record_id,
                    model_id=model.id,
                    model_version=model.version,
                )
                for rank, hit in enumerate(hits, start=1)
            ]
        )

    async def delete_subject(self, request: matcher_pb2.DeleteSubjectRequest) -> matcher_pb2.DeleteSubjectResponse:
        """Remove a subject from one model's gallery or from all of them."""
        check_subject_id(request.subject_id)
        indexes = self._gallery.all_indexes()
        if request.model_id:
            indexes = [index for index in indexes if index.model.id == request.model_id]
        # The tombstone first: an import's queued photo of this subject, arriving any time from
        # now, is refused rather than enrolled again.
        await self._tombstones.mark_subject(request.subject_id)
        deleted = 0
        for index in indexes:
            deleted += await asyncio.to_thread(index.delete_subject, request.subject_id)
        log.info("subject_deleted", records=deleted)
        return matcher_pb2.DeleteSubjectResponse(deleted_records=deleted)

    async def delete_record(self, request: matcher_pb2.DeleteRecordRequest) -> matcher_pb2.DeleteRecordResponse:
        """Remove one record from whichever gallery holds it."""
        try:
            uuid.UUID(request.record_id)
        except ValueError as exc:
            raise InvalidInput("record_id must be a UUID") from exc
        await self._tombstones.mark_record(request.record_id)
        for index in self._gallery.all_indexes():
            subject = await asyncio.to_thread(index.delete_record, request.record_id)
            if subject is not None:
                log.info("record_deleted", record_id=request.record_id, model=index.model.id)
                return matcher_pb2.DeleteRecordResponse(deleted=True, subject_id=subject)
        return matcher_pb2.DeleteRecordResponse(deleted=False)

    async def gallery(self, request: matcher_pb2.GetGalleryRequest) -> matcher_pb2.GetGalleryResponse:
        """How many records a model's gallery holds (all models when none is named), of one subject
        when one is named."""
        if request.subject_id:
            check_subject_id(request.subject_id)
        indexes = self._gallery.all_indexes()
        if request.model_id:
            indexes = [index for index in indexes if index.model.id == request.model_id]
        counted = await asyncio.to_thread(lambda: sum(index.count(request.subject_id or None) for index in indexes))
        return matcher_pb2.GetGalleryResponse(records=counted)


class MatcherServicer(matcher_pb2_grpc.MatcherServiceServicer):
    """gRPC adapter."""

    def __init__(self, service: MatchingService) -> None:
        self._service = service

    @rpc("candor.matcher.v1.MatcherService")
    async def Enroll(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._service.enroll(request)

    @rpc("candor.matcher.v1.MatcherService")
    async def Search(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._service.search(request)

    @rpc("candor.matcher.v1.MatcherService")
    async def DeleteSubject(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._service.delete_subject(request)

    @rpc("candor.matcher.v1.MatcherService")
    async def DeleteRecord(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._service.delete_record(request)

    @rpc("candor.matcher.v1.MatcherService")
    async def GetGallery(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._service.gallery(request)


async def optimize_when_quiet(gallery: Gallery, quiet_s: float, stop: asyncio.Event) -> None:
    """Index the embedded gallery's new points once writes have paused for ``quiet_s``."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), quiet_s)
        try:
            if await asyncio.to_thread(gallery.optimize_settled, quiet_s):
                log.info("gallery_optimized")
        except Exception as exc:  # noqa: BLE001 - searches stay exact without it; try again later
            log.warning("gallery_optimize_failed", error=str(exc))


async def serve(settings: MatcherSettings, stop: asyncio.Event) -> None:
    """Run the matcher until ``stop`` is set."""
    gallery = Gallery(settings.build_backend())
    try:
        async with ServiceHost(settings.common, ["candor.matcher.v1.MatcherService"]) as host:
            assert host.bus is not None
            bucket = await open_bucket(host.bus, subjects.TOMBSTONES_BUCKET, settings.worker.stream_replicas)
            tombstones = Tombstones(bucket)
            service = MatchingService(gallery, tombstones)
            matcher_pb2_grpc.add_MatcherServiceServicer_to_server(MatcherServicer(service), host.grpc.server)
            await host.start_grpc()
            await host.bus.serve(ENROLL_SUBJECT, "matcher", matcher_pb2.EnrollRequest, service.enroll)
            await host.bus.serve(SEARCH_SUBJECT, "matcher", matcher_pb2.SearchRequest, service.search)
            await host.bus.serve(DELETE_SUBJECT, "matcher", matcher_pb2.DeleteSubjectRequest, service.delete_subject)
            await host.bus.serve(DELETE_RECORD, "matcher", matcher_pb2.DeleteRecordRequest, service.delete_record)
            await host.bus.serve(GALLERY_SUBJECT, "matcher", matcher_pb2.GetGalleryRequest, service.gallery)
            stage = MatchStage(host.bus, gallery, tombstones, AuditPublisher(host.bus))
            tasks = [
                running_worker(host.bus, MATCH, stage, settings.worker, stop),
                asyncio.create_task(optimize_when_quiet(gallery, settings.optimize_after_s, stop)),
            ]
            await host.mark_serving()
            await stop.wait()
            await asyncio.gather(*(task for task in tasks if task is not None))
    finally:
        gallery.close()

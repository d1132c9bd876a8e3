"""The matcher service: gRPC and NATS adapters around the Gallery."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import structlog

from candor.common.v1 import common_pb2
from candor.matcher.v1 import matcher_pb2, matcher_pb2_grpc
from candor_kit import (
    AuditPublisher,
    CandorError,
    CommonSettings,
    EnvReader,
    InvalidInput,
    PreconditionFailed,
    ServiceHost,
    catalogue,
    metrics,
    rpc,
    subjects,
)
from candor_kit.audit_events import AlreadyRecorded, enrolment_event_id, expunge_event_id
from candor_kit.audit_outbox import AuditOutbox
from candor_kit.gallery_models import (
    GalleryModelsRecord,
    check_enrol_model,
    check_search_model,
    copy_of,
    has,
    reembed_event_id,
    switched_by_its_reembedding,
)
from candor_kit.identifiers import check_metadata, check_new_subject_id, check_subject_id
from candor_kit.ingest import MATCH, WorkerSettings, running_worker
from candor_kit.jetstream_setup import open_bucket
from candor_matcher.edge_backend import EdgeBackend
from candor_matcher.gallery import Enrolment, Gallery, GalleryBackend, GalleryIndex, GalleryModel
from candor_matcher.group_commit import GroupCommit
from candor_matcher.ingest import MatchStage
from candor_matcher.server_backend import QdrantServerBackend
from candor_matcher.tombstones import Tombstones

ENROLL_SUBJECT = subjects.MATCH_ENROLL
SEARCH_SUBJECT = subjects.MATCH_SEARCH
DELETE_SUBJECT = subjects.MATCH_DELETE_SUBJECT
DELETE_RECORD = subjects.MATCH_DELETE_RECORD
GALLERY_SUBJECT = subjects.MATCH_GALLERY
MAX_LIMIT = 200
#: The most records one page of ListMissingRecords holds.
MAX_PAGE = 10_000
log = structlog.get_logger("candor.matcher")
#: The audit outbox's file in the embedded gallery's folder.
OUTBOX_FILE = "audit-outbox.sqlite3"
#: Seconds a stopping matcher waits for its outbox to empty before the bus closes.
OUTBOX_DRAIN_S = 5.0
#: An enrolment's outcome: the collection it went to, its record id, and whether it is new.
Enrolled = tuple[GalleryIndex, str, bool]


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
    #: The audit outbox's file; None: each search's record is published before its answer.
    audit_outbox: Path | None = None

    @classmethod
    def from_env(cls, env: EnvReader | None = None) -> MatcherSettings:
        """Read the matcher settings (catalogue.SERVICES["matcher"]); raises ConfigError naming every bad value."""
        env = env or EnvReader()
        common = CommonSettings.read("matcher", env)
        backend = env.get(catalogue.MATCHER_BACKEND)
        outbox = Path(raw) if (raw := env.get(catalogue.MATCHER_AUDIT_OUTBOX)) else None
        shared = {
            "optimize_after_s": env.get(catalogue.MATCHER_OPTIMIZE_AFTER_S),
            "worker": WorkerSettings.read(env),
        }
        if backend == "edge":
            data_dir = Path(env.get(catalogue.MATCHER_DATA_DIR))
            settings = cls(
                common=common,
                backend=backend,
                data_dir=data_dir,
                audit_outbox=outbox or data_dir / OUTBOX_FILE,
                **shared,
            )
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
                audit_outbox=outbox,
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
    """Runs gallery operations off the event loop, under the gallery's model record: searches use
    the active model, enrolments go to the active model or the one being re-embedded into."""

    def __init__(
        self,
        gallery: Gallery,
        tombstones: Tombstones,
        models: GalleryModelsRecord,
        audit: AuditPublisher,
        searches_audit: AuditPublisher | None = None,
    ) -> None:
        self._gallery = gallery
        self._tombstones = tombstones
        self._models = models
        #: Every search and change asked for over the bus or gRPC is audited here, where it
        #: happens, besides the gateway's own record (an import's enrolments, by its stage).
        self._audit = audit
        #: Searches are recorded through the outbox when there is one: durable on the matcher's
        #: disk before the answer, on the audit stream behind it (not a second durable wait on
        #: the search's path besides the gateway's own record).
        self._searches_audit = searches_audit or audit
        # Enrolments and the switch take turns: no record lands in the old collection between
        # the switch's completeness check and the switch itself.
        self._turn = asyncio.Lock()
        # Enrolments that arrive while one is being written are written together (one disk sync).
        self._enrolments: GroupCommit[tuple[GalleryModel, Enrolment], Enrolled] = GroupCommit(self._enrol_group)

    async def close(self) -> None:
        """Write the enrolments already asked for and refuse new ones (at shutdown)."""
        await self._enrolments.close()

    async def adopt_single_model(self) -> None:
        """A gallery from before the model record, holding one model's collection, searches with it."""
        indexes = self._gallery.all_indexes()
        if len(indexes) == 1:
            only = _ref(indexes[0].model)
            await self._models.change(_claimed_by(only))

    async def enrol_vector(self, model_ref: common_pb2.ModelRef, record: Enrolment) -> Enrolled:
        """Store one face with a model the gallery record allows (the first enrolment of an empty
        gallery makes its model the active one); returns the index, record id and whether it is new.
        Written together with the enrolments that arrive meanwhile (`GroupCommit`)."""
        return await self._enrolments.submit((GalleryModel.from_ref(model_ref), record))

    async def _enrol_group(self, group: list[tuple[GalleryModel, Enrolment]]) -> list[Enrolled | BaseException]:
        """Write a group of enrolments, one write per collection; a record the model record or its
        collection refuses gets its own error, the others are stored."""
        outcomes: dict[int, Enrolled | BaseException] = {}
        by_index: dict[str, tuple[GalleryIndex, list[int]]] = {}
        async with self._turn:
            models, _ = await self._models.read()
            for position, (model, record) in enumerate(group):
                try:
                    check_enrol_model(models, model.id)
                    index = self._gallery.index_for(model)  # refuses a version the gallery does not hold
                    index.check(record.vector)
                    if not has(models.active):  # claimed now, unless another matcher claimed it first
                        models = await self._models.change(_claimed_by(_ref(model)))
                        check_enrol_model(models, model.id)
                except CandorError as exc:
                    outcomes[position] = exc
                    continue
                by_index.setdefault(model.id, (index, []))[1].append(position)
            for index, positions in by_index.values():
                try:
                    stored = await asyncio.to_thread(index.enroll_many, [group[at][1] for at in positions])
                except Exception as exc:  # noqa: BLE001 - this collection's callers get it; the others' writes stand
                    outcomes.update((at, exc) for at in positions)
                    continue
                for at, (record_id, created) in zip(positions, stored, strict=True):
                    outcomes[at] = (index, record_id, created)
        return [outcomes[at] for at in range(len(group))]

    async def enroll(self, request: matcher_pb2.EnrollRequest) -> matcher_pb2.EnrollResponse:
        """Add one face to the subject's records."""
        check_new_subject_id(request.subject_id)
        check_metadata(request.metadata)
        if len(request.image_sha256) != 64:
            raise InvalidInput("image_sha256 must be 64 hex digits")
        enrolment = Enrolment(
            subject_id=request.subject_id,
            image_sha256=request.image_sha256,
            vector=list(request.embedding.values),
            metadata=dict(request.metadata),
            image_ref=request.image_ref,
        )
        check_origin(request.origin)
        index, record_id, created = await self.enrol_vector(request.model, enrolment)
        log.info("face_enrolled", record_id=record_id, created=created, model=index.model.id)
        # The run under an enrolment's id that creates the record records it under an id the
        # gateway can read back: redone after its gateway died, the enrolment finds the record made.
        read_back = bool(request.origin.request_id and created)
        await self._audited_once(
            "matcher.enrolled",
            request.origin,
            enrolment_event_id(request.origin.request_id, index.model.id) if read_back else None,
            subject_id=request.subject_id,
            record_id=record_id,
            created=created,
            image_sha256=request.image_sha256,
            model=index.model.id,
        )
        return matcher_pb2.EnrollResponse(record_id=record_id, created=created)

    async def _audited(
        self,
        kind: str,
        origin: common_pb2.Origin,
        *,
        via: AuditPublisher | None = None,
        event_id: str | None = None,
        first: bool = False,
        **details: object,
    ) -> None:
        """Record one action of the matcher's, for whom the caller says it was (``via`` another
        publisher, the outbox's, or on the audit stream; under ``event_id`` when the action has one,
        so that its repeats are recorded once; with ``first``, AlreadyRecorded for a repeat); when
        the record cannot be stored the call fails, so the caller never takes an unrecorded action
        as done."""
        await (via or self._audit).publish(
            kind,
            event_id=event_id,
            first=first,
            actor=origin.actor or UNSTATED,
            case_number=origin.case_number,
            purpose=origin.purpose,
            details={"request_id": origin.request_id, **details},
        )

    async def _audited_once(
        self, kind: str, origin: common_pb2.Origin, event_id: str | None, **details: object
    ) -> None:
        """Record an action under ``event_id`` (a gateway reads it back by that id), or under an id
        of its own when a run before already recorded one there: both are on the chain, the first
        where the gateway looks."""
        try:
            await self._audited(kind, origin, event_id=event_id, first=event_id is not None, **details)
        except AlreadyRecorded:
            await self._audited(kind, origin, **details)

    async def begin_reembed(self, request: matcher_pb2.BeginReembedRequest) -> matcher_pb2.GalleryModels:
        """Create the target model's collection beside the active one and name it the target."""
        check_origin(request.origin)
        target = GalleryModel.from_ref(request.target)

        def begin(models: matcher_pb2.GalleryModels) -> matcher_pb2.GalleryModels | None:
            if not has(models.active):
                raise PreconditionFailed("the gallery is empty: there is nothing to re-embed")
            if models.active.id == target.id:
                raise InvalidInput(f"{target.id} is already the gallery's model")
            if models.target.id == target.id and models.target.version == target.version:
                if models.reembed_id:
                    return None
            else:
                models.target.CopyFrom(_ref(target))
            # Named once, when it begins (or, begun before re-embeddings were named, when continued).
            models.reembed_id = str(uuid.uuid4())
            return models

        begin(copy_of((await self._models.read())[0]))  # refuse before making anything
        self._gallery.index_for(target)  # the new collection, made now; a version clash is refused here
        models = await self._models.change(begin)
        log.info("reembed_begun", active=models.active.id, target=models.target.id)
        # Recorded on every begin, under the re-embedding's one id: a matcher that died between the
        # record's change and this is recorded by the retry, and a continued one adds nothing.
        await self._audited(
            "matcher.reembed_begun",
            request.origin,
            event_id=reembed_event_id(models, "begun"),
            active=models.active.id,
            target=models.target.id,
        )
        return models

    def _migration(self, target_model_id: str, models: matcher_pb2.GalleryModels) -> tuple[GalleryIndex, GalleryIndex]:
        if not has(models.target) or models.target.id != target_model_id:
            raise PreconditionFailed(f"the gallery is not being re-embedded into {target_model_id or '(none)'}")
        active = self._gallery.index_for(GalleryModel.from_ref(models.active))
        return active, self._gallery.index_for(GalleryModel.from_ref(models.target))

    async def list_missing(
        self, request: matcher_pb2.ListMissingRecordsRequest
    ) -> matcher_pb2.ListMissingRecordsResponse:
        """Records of the active model the target's collection lacks, a page at a time."""
        limit = request.limit or 1000
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
        if request.after:
            _check_uuid(request.after, "after")
        active, target = self._migration(request.target_model_id, (await self._models.read())[0])
        records, following = await asyncio.to_thread(active.missing_from, target, request.after or None, limit)
        return matcher_pb2.ListMissingRecordsResponse(
            records=[
                matcher_pb2.GalleryRecord(
                    record_id=r.record_id,
                    subject_id=r.subject_id,
                    image_sha256=r.image_sha256,
                    origin=r.origin,
                    image_ref=r.image_ref,
                    metadata=r.metadata,
                )
                for r in records
            ],
            next=following or "",
        )

    async def switch_model(self, request: matcher_pb2.SwitchModelRequest) -> matcher_pb2.GalleryModels:
        """Make the target the active model, once its collection holds every record of the active
        one but the excused; searches move over in the one write of the model record."""
        check_origin(request.origin)
        excused = set(request.excused_record_ids)
        for record_id in excused:
            _check_uuid(record_id, "excused_record_ids")
        async with self._turn:
            models, _ = await self._models.read()
            if switched_by_its_reembedding(models, request.target_model_id):
                # Sent again (its answer lost with the gateway that asked): done, and recorded once.
                await self._audit_switch(request, models, excused)
                return models
            active, target = self._migration(request.target_model_id, models)
            missing, examples = await asyncio.to_thread(active.unmatched_in, target, excused)
            if missing:
                raise PreconditionFailed(
                    f"{missing} records of {active.model.id} are not in {target.model.id} yet "
                    f"(for example {', '.join(examples)}); re-embed them or excuse them"
                )

            def switch(current: matcher_pb2.GalleryModels) -> matcher_pb2.GalleryModels | None:
                if switched_by_its_reembedding(current, request.target_model_id):
                    return None  # another replica's switch of the same re-embedding won: done
                if current.target.id != request.target_model_id:
                    raise PreconditionFailed("the re-embedding changed meanwhile; try again")
                current.previous.CopyFrom(current.active)
                current.active.CopyFrom(current.target)
                current.ClearField("target")
                return current

            switched = await self._models.change(switch)
        log.info(
            "gallery_model_switched", active=switched.active.id, previous=switched.previous.id, excused=len(excused)
        )
        await self._audit_switch(request, switched, excused)
        return switched

    async def _audit_switch(
        self, request: matcher_pb2.SwitchModelRequest, switched: matcher_pb2.GalleryModels, excused: set[str]
    ) -> None:
        """Record a switch whole, why and what it left out, under its re-embedding's one id: the
        matcher's record holds all of it even when the gateway that asked is lost before its own."""
        await self._audited(
            "matcher.model_switched",
            request.origin,
            event_id=reembed_event_id(switched, "switched"),
            active=switched.active.id,
            previous=switched.previous.id,
            excused=len(excused),
            reason=request.reason,
            records_left_out=sorted(excused),
        )

    async def search(self, request: matcher_pb2.SearchRequest) -> matcher_pb2.SearchResponse:
        """Ranked candidates, one per subject, within the distance limit."""
        if not 1 <= request.limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}")
        if request.max_distance <= 0:
            raise InvalidInput("max_distance must be positive")
        check_origin(request.origin)
        model = GalleryModel.from_ref(request.model)
        check_search_model(await self._models.for_search(), model.id)
        index = self._gallery.index_to_search(model)
        hits = []
        start = time.perf_counter()
        if index is not None:  # None: nothing enrolled yet
            hits = await asyncio.to_thread(
                index.search, list(request.embedding.values), request.limit, request.max_distance
            )
        searched = time.perf_counter()
        await self._audited(
            "matcher.searched",
            request.origin,
            via=self._searches_audit,
            model=model.id,
            limit=request.limit,
            max_distance=round(float(request.max_distance), 6),
            record_ids=[hit.record_id for hit in hits],
        )
        log.info(
            "gallery_searched",
            candidates=len(hits),
            model=model.id,
            compute_ms=round((searched - start) * 1000, 2),
            audit_ms=round((time.perf_counter() - searched) * 1000, 2),
        )
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
        check_origin(request.origin)
        indexes = self._gallery.all_indexes()
        if request.model_id:
            indexes = [index for index in indexes if index.model.id == request.model_id]
        # The tombstone first: an import's queued photo of this subject, arriving any time from
        # now, is refused rather than enrolled again.
        await self._tombstones.mark_subject(request.subject_id)
        deleted = 0
        record_ids: set[str] = set()
        for index in indexes:
            gone = await asyncio.to_thread(index.delete_subject, request.subject_id)
            deleted += len(gone)
            record_ids.update(gone)
        log.info("subject_deleted", records=deleted)
        # The first run under an expunge's id to delete anything records it under an id the
        # gateway can read back: redone after its gateway died, the expunge finds nothing left.
        read_back = bool(request.origin.request_id and deleted)
        await self._audited_once(
            "matcher.subject_deleted",
            request.origin,
            expunge_event_id(request.origin.request_id) if read_back else None,
            subject_id=request.subject_id,
            model=request.model_id,
            records=deleted,
        )
        return matcher_pb2.DeleteSubjectResponse(deleted_records=deleted, record_ids=sorted(record_ids))

    async def delete_record(self, request: matcher_pb2.DeleteRecordRequest) -> matcher_pb2.DeleteRecordResponse:
        """Remove one record from every model's gallery that holds it."""
        _check_uuid(request.record_id, "record_id")
        check_origin(request.origin)
        await self._tombstones.mark_record(request.record_id)
        subject = None
        for index in self._gallery.all_indexes():
            held = await asyncio.to_thread(index.delete_record, request.record_id)
            if held is not None:
                subject = held
                log.info("record_deleted", record_id=request.record_id, model=index.model.id)
        await self._audited(
            "matcher.record_deleted",
            request.origin,
            record_id=request.record_id,
            subject_id=subject or "",
            # Asked again (a retry, a racing call), it finds nothing: its record says so.
            deleted=subject is not None,
        )
        if subject is None:
            return matcher_pb2.DeleteRecordResponse(deleted=False)
        return matcher_pb2.DeleteRecordResponse(deleted=True, subject_id=subject)

    async def gallery(self, request: matcher_pb2.GetGalleryRequest) -> matcher_pb2.GetGalleryResponse:
        """How many records a model's gallery holds (all models when none is named), of one subject
        when one is named."""
        if request.subject_id:
            check_subject_id(request.subject_id)
        indexes = self._gallery.all_indexes()
        if request.model_id:
            indexes = [index for index in indexes if index.model.id == request.model_id]
        counted = await asyncio.to_thread(lambda: sum(index.count(request.subject_id or None) for index in indexes))
        if request.subject_id:
            # Whether a person is in the gallery is itself a fact about them: on record, like a search.
            check_origin(request.origin)
            await self._audited(
                "matcher.gallery_read", request.origin, subject_id=request.subject_id, model=request.model_id,
                records=counted,
            )  # fmt: skip
        return matcher_pb2.GetGalleryResponse(records=counted)


def _ref(model: GalleryModel) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(id=model.id, version=model.version, metric=model.metric, dimension=model.dimension)


def _claimed_by(
    model: common_pb2.ModelRef,
) -> Callable[[matcher_pb2.GalleryModels], matcher_pb2.GalleryModels | None]:
    """An edit of the model record that makes ``model`` active unless a model already is."""

    def claim(models: matcher_pb2.GalleryModels) -> matcher_pb2.GalleryModels | None:
        if has(models.active):
            return None
        models.active.CopyFrom(model)
        return models

    return claim


#: The actor of a matcher record whose caller named nobody.
UNSTATED = "unstated"
#: The longest origin field accepted: the matcher records them, so they are bounded.
MAX_ORIGIN_CHARS = 128


def check_origin(origin: common_pb2.Origin) -> None:
    """Refuse an origin whose fields are too long or hold control characters to be recorded."""
    for name in ("actor", "case_number", "purpose", "request_id"):
        value = getattr(origin, name)
        if len(value) > MAX_ORIGIN_CHARS or not value.isprintable():
            raise InvalidInput(f"origin.{name} must be at most {MAX_ORIGIN_CHARS} printable characters")


def _check_uuid(value: str, name: str) -> None:
    try:
        uuid.UUID(value)
    except ValueError as exc:
        raise InvalidInput(f"{name} must hold record ids (UUIDs)") from exc


class MatcherServicer(matcher_pb2_grpc.MatcherServiceServicer):
    """gRPC adapter."""

    def __init__(self, service: MatchingService) -> None:
        self._service = service

    @rpc("candor.matcher.v1.MatcherService", to_the_end="enrolment")
    async def Enroll(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._service.enroll(request)

    @rpc("candor.matcher.v1.MatcherService")
    async def Search(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._service.search(request)

    @rpc("candor.matcher.v1.MatcherService", to_the_end="expunge")
    async def DeleteSubject(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._service.delete_subject(request)

    @rpc("candor.matcher.v1.MatcherService", to_the_end="record deletion")
    async def DeleteRecord(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._service.delete_record(request)

    @rpc("candor.matcher.v1.MatcherService")
    async def GetGallery(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._service.gallery(request)

    @rpc("candor.matcher.v1.MatcherService", to_the_end="re-embedding start")
    async def BeginReembed(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._service.begin_reembed(request)

    @rpc("candor.matcher.v1.MatcherService")
    async def ListMissingRecords(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._service.list_missing(request)

    @rpc("candor.matcher.v1.MatcherService")
    async def SwitchModel(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._service.switch_model(request)


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


#: Seconds between counts of the gallery for the ``candor_gallery_records`` gauge.
GALLERY_COUNT_INTERVAL_S = 15.0


async def count_gallery(gallery: Gallery, stop: asyncio.Event, interval_s: float = GALLERY_COUNT_INTERVAL_S) -> None:
    """Keep the gallery-size gauge current: every model's record count, now and every ``interval_s``."""
    while not stop.is_set():
        try:
            for index in gallery.all_indexes():
                metrics.GALLERY_RECORDS.labels(index.model.id).set(await asyncio.to_thread(index.count, None))
        except Exception as exc:  # noqa: BLE001 - the gauge goes stale, searches go on; try again later
            log.warning("gallery_count_failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def serve(settings: MatcherSettings, stop: asyncio.Event) -> None:
    """Run the matcher until ``stop`` is set."""
    gallery = Gallery(settings.build_backend())
    service: MatchingService | None = None
    outbox: AuditOutbox | None = None
    try:
        async with ServiceHost(settings.common, ["candor.matcher.v1.MatcherService"]) as host:
            assert host.bus is not None
            replicas = settings.worker.stream_replicas
            tombstones = Tombstones(await open_bucket(host.bus, subjects.TOMBSTONES_BUCKET, replicas))
            models = GalleryModelsRecord(await open_bucket(host.bus, subjects.GALLERY_BUCKET, replicas))
            audit = AuditPublisher(host.bus, "matcher")
            searches_audit = None
            if settings.audit_outbox is not None:
                outbox = AuditOutbox(audit, settings.audit_outbox)
                await outbox.open()
                searches_audit = AuditPublisher(host.bus, "matcher", store=outbox.write)
            service = MatchingService(gallery, tombstones, models, audit, searches_audit)
            await service.adopt_single_model()
            matcher_pb2_grpc.add_MatcherServiceServicer_to_server(MatcherServicer(service), host.grpc.server)
            await host.start_grpc()
            await host.bus.serve(ENROLL_SUBJECT, "matcher", matcher_pb2.EnrollRequest, service.enroll)
            await host.bus.serve(SEARCH_SUBJECT, "matcher", matcher_pb2.SearchRequest, service.search)
            await host.bus.serve(DELETE_SUBJECT, "matcher", matcher_pb2.DeleteSubjectRequest, service.delete_subject)
            await host.bus.serve(DELETE_RECORD, "matcher", matcher_pb2.DeleteRecordRequest, service.delete_record)
            await host.bus.serve(GALLERY_SUBJECT, "matcher", matcher_pb2.GetGalleryRequest, service.gallery)
            await host.bus.serve(
                subjects.MATCH_BEGIN_REEMBED, "matcher", matcher_pb2.BeginReembedRequest, service.begin_reembed
            )
            await host.bus.serve(
                subjects.MATCH_LIST_MISSING, "matcher", matcher_pb2.ListMissingRecordsRequest, service.list_missing
            )
            await host.bus.serve(
                subjects.MATCH_SWITCH_MODEL, "matcher", matcher_pb2.SwitchModelRequest, service.switch_model
            )
            stage = MatchStage(host.bus, service, tombstones, audit, settings.worker.batch)
            tasks = [
                running_worker(host.bus, MATCH, stage, settings.worker, stop),
                asyncio.create_task(optimize_when_quiet(gallery, settings.optimize_after_s, stop)),
                asyncio.create_task(count_gallery(gallery, stop)),
            ]
            await host.mark_serving()
            await stop.wait()
            await asyncio.gather(*(task for task in tasks if task is not None))
            await models.close()
            if outbox is not None:  # the searches' records go out before the bus closes (or at the next start)
                await outbox.drain(OUTBOX_DRAIN_S)
    finally:
        if outbox is not None:
            await outbox.close()
        if service is not None:  # enrolments under way are written before the gallery closes
            await service.close()
        gallery.close()

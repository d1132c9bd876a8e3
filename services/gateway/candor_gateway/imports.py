"""Bulk imports: start or resume one, queue its photos, and tell its progress.

The gateway checks who may import, fixes the import's rules, registers each photo's item (the
matcher enrols only registered items) and queues it on the detect stage's work-queue stream; the
detector, embedder and matcher workers do the rest. What it knows about an import comes from
JetStream alone (the import record in the CANDOR_IMPORTS bucket and one result per photo), so any
gateway replica answers for any import, and a restarted one forgets nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import structlog
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from candor.gateway.v1 import gateway_pb2
from candor.ingest.v1 import ingest_pb2
from candor_gateway.access import Permission, require
from candor_gateway.photos import PhotoHeader, PhotoStore
from candor_gateway.routes import ModelRoutes
from candor_kit import AuditPublisher, Bus, CandorError, InvalidInput, NotFound, Overloaded, PreconditionFailed
from candor_kit.bus import OneRead, fetch_batch, one_read_consumer
from candor_kit.identifiers import check_metadata, check_new_subject_id, record_id_for
from candor_kit.ingest import (
    EARLIER_SOURCE,
    IMPORT_ID,
    MATCH,
    ItemRegister,
    Stage,
    check_import_id,
    ensure_ingest_streams,
    hand_on,
    may_give,
    publish_result,
    rejection,
    result_source,
    result_stands,
    result_subject,
)
from candor_kit.jetstream_setup import open_bucket
from candor_kit.metrics import IMPORT_RESULTS_REFUSED
from candor_kit.subjects import (
    IMPORTS_BUCKET,
    INGEST_RESULT_PREFIX,
    INGEST_RESULT_SOURCES,
    INGEST_RESULTS_STREAM,
    INGEST_STAGES,
    ingest_stream,
)
from candor_kit.tokens import Principal

log = structlog.get_logger("candor.gateway.imports")
#: The largest import one record describes.
MAX_ITEMS = 50_000_000
#: Imports whose tallies a gateway keeps in memory (a tally costs three bytes a photo).
CACHED_TALLIES = 16
PROBLEMS = (ingest_pb2.OUTCOME_REJECTED, ingest_pb2.OUTCOME_FAILED)


#: The sources of results a tally tells apart, by the number it keeps for each photo (0: none).
TALLY_SOURCES = (EARLIER_SOURCE, *INGEST_RESULT_SOURCES)


@dataclass
class Tally:
    """Each photo's outcome, rejection reason and the source of its result (0 while it has none),
    read from the results stream."""

    total: int
    outcomes: np.ndarray = field(init=False)
    reasons: np.ndarray = field(init=False)
    #: 1 + the index in TALLY_SOURCES of the party whose result stands.
    sources: np.ndarray = field(init=False)
    #: The next results-stream sequence to read.
    next_sequence: int = 1

    def __post_init__(self) -> None:
        self.outcomes = np.zeros(self.total, dtype=np.int8)
        self.reasons = np.zeros(self.total, dtype=np.int8)
        self.sources = np.zeros(self.total, dtype=np.int8)

    def take(self, subject: str, data: bytes) -> ingest_pb2.ItemResult | None:
        """Read the result stored on ``subject``; it, if it stands.

        Refused, and logged, when it is not a result, names another photo than its subject does, or
        gives an outcome its sender cannot: only a forged result or a broken worker does any of
        these, and none of them stops the import's tally."""
        source = result_source(subject)
        try:
            result = ingest_pb2.ItemResult.FromString(data)
        except DecodeError:
            return _refused(subject, source, "it is not a result")
        item = result.item
        if source is None or subject != result_subject(item.import_id, item.item, source):
            return _refused(subject, source, "it names another photo than its subject")
        if not may_give(source, result.outcome):
            return _refused(subject, source, "its sender cannot give that outcome")
        return result if self.add(result, source) else None

    def add(self, result: ingest_pb2.ItemResult, source: str) -> bool:
        """Take a photo's result from ``source`` if it stands over the one held (``result_stands``:
        from as far along the line or further, and an outcome that source can give); whether it
        did."""
        item = result.item.item
        if not 0 <= item < self.total:
            return False
        if not result_stands(source, result.outcome, self.source(item)):
            return False
        self.outcomes[item] = result.outcome
        self.reasons[item] = result.reason
        self.sources[item] = TALLY_SOURCES.index(source) + 1
        return True

    def source(self, item: int) -> str | None:
        """The party whose result for photo ``item`` stands; None while it has none."""
        held = int(self.sources[item])
        return TALLY_SOURCES[held - 1] if held else None

    def settle(self, result: ingest_pb2.ItemResult, import_id: str, item: int, stored: bytes) -> None:
        """Fill ``result`` for photo ``item`` from the message stored on the subject of its standing
        result, with the outcome the tally holds. The sender may since have stored there a result
        that was refused (not a result, one naming another photo, or one giving an outcome it cannot
        give), which replaced its own on the subject: then only what the tally holds is told."""
        try:
            result.ParseFromString(stored)
            told = (result.item.import_id, result.item.item, result.outcome, result.reason)
        except DecodeError:
            told = None
        outcome, reason = int(self.outcomes[item]), int(self.reasons[item])
        if told != (import_id, item, outcome, reason):
            result.Clear()
            result.item.import_id, result.item.item = import_id, item
            result.outcome, result.reason = outcome, reason  # type: ignore[assignment]
            result.detail = "a later result for this photo was refused as forged; this outcome stands"

    def subject(self, import_id: str, item: int) -> str:
        """Where the photo's standing result is kept (it must have one)."""
        return result_subject(import_id, item, TALLY_SOURCES[int(self.sources[item]) - 1])

    def count(self, outcome: int) -> int:
        """Photos with that outcome."""
        return int(np.count_nonzero(self.outcomes == outcome))

    def status(self, record: ingest_pb2.ImportRecord, with_done_items: bool) -> gateway_pb2.ImportStatus:
        """The import's progress as the API gives it."""
        done = self.outcomes != 0
        rejected = self.outcomes == ingest_pb2.OUTCOME_REJECTED
        reasons, counts = np.unique(self.reasons[rejected], return_counts=True)
        return gateway_pb2.ImportStatus(
            record=record,
            done=int(np.count_nonzero(done)),
            enrolled=self.count(ingest_pb2.OUTCOME_ENROLLED),
            duplicates=self.count(ingest_pb2.OUTCOME_DUPLICATE),
            rejected=int(np.count_nonzero(rejected)),
            failed=self.count(ingest_pb2.OUTCOME_FAILED),
            rejected_by_reason=[
                gateway_pb2.ReasonCount(reason=int(r), count=int(c)) for r, c in zip(reasons, counts, strict=True)
            ],
            done_items=np.packbits(done, bitorder="little").tobytes() if with_done_items else b"",
        )


def _refused(subject: str, source: str | None, why: str) -> None:
    """Log and count a result the tally refuses (``CandorImportResultRefused`` alerts on it)."""
    log.warning("import_result_refused", subject=subject[:200], why=why)
    IMPORT_RESULTS_REFUSED.labels(source="unknown" if source is None else source or "earlier").inc()


def _is_origin(origin: str) -> bool:
    """Whether ``origin`` has the form of a record's origin, ``<import id>/<item>``."""
    import_id, _, item = origin.partition("/")
    return bool(IMPORT_ID.match(import_id)) and item.isdigit() and len(item) <= 12


class ImportDesk:
    """The gateway's import use cases."""

    def __init__(
        self,
        bus: Bus,
        audit: AuditPublisher,
        rules: ingest_pb2.ImportRules,
        max_image_bytes: int,
        backlog: int,
        routes: ModelRoutes,
        stream_replicas: int,
        photos: PhotoStore,
    ) -> None:
        self._bus = bus
        self._photos = photos
        self._routes = routes
        self._audit = audit
        self._rules = rules
        self._max_image_bytes = max_image_bytes
        self._backlog = backlog
        self._replicas = stream_replicas
        self._bucket: KeyValue | None = None
        self._register = ItemRegister(bus, stream_replicas)
        self._tallies: OrderedDict[str, Tally] = OrderedDict()
        self._tally_locks: dict[str, asyncio.Lock] = {}

    async def open(self) -> None:
        """Create the streams and the bucket of import records when missing."""
        await ensure_ingest_streams(self._bus, self._replicas)
        self._bucket = await open_bucket(self._bus, IMPORTS_BUCKET, self._replicas)
        await self._register.ensure()

    @property
    def bucket(self) -> KeyValue:
        """The bucket of import records."""
        if self._bucket is None:
            raise RuntimeError("ImportDesk.open() was not awaited")
        return self._bucket

    async def _record(self, import_id: str) -> tuple[ingest_pb2.ImportRecord, int]:
        try:
            entry = await self.bucket.get(check_import_id(import_id))
        except KeyNotFoundError as exc:
            raise NotFound(f"no import {import_id}") from exc
        record = ingest_pb2.ImportRecord()
        try:
            record.ParseFromString(entry.value or b"")
        except DecodeError as exc:
            raise PreconditionFailed(
                f"the record of import {import_id} cannot be read; report it to the operators"
            ) from exc
        return record, int(entry.revision or 0)

    # --- use cases -------------------------------------------------------------------------

    async def start(self, principal: Principal, request: gateway_pb2.StartImportRequest) -> gateway_pb2.ImportStatus:
        """Record a new import (audited), or resume the one with this id from the same source."""
        require(principal, Permission.START_IMPORT)
        check_import_id(request.import_id)
        if not 1 <= request.total <= MAX_ITEMS:
            raise InvalidInput(f"total must be between 1 and {MAX_ITEMS}")
        if not request.source.strip() or len(request.source) > 1000:
            raise InvalidInput("source must name the folder or manifest imported (at most 1000 characters)")
        try:
            record, _ = await self._record(request.import_id)
        except NotFound:
            started = Timestamp()
            started.GetCurrentTime()
            record = ingest_pb2.ImportRecord(
                import_id=request.import_id,
                source=request.source,
                total=request.total,
                started_by=principal.user,
                started_at=started,
                rules=self._rules,
                model_id=await self._routes.import_model(request.model_id),
            )
            try:
                await self.bucket.create(request.import_id, record.SerializeToString())
            except KeyWrongLastSequenceError:  # another gateway started it a moment ago
                record, _ = await self._record(request.import_id)
        # Every start or resume records the import's start: the gateway that recorded the import
        # may have died before it did. The chain holds the event once (one event id).
        await self._record_start(record)
        if record.total != request.total or record.source != request.source:
            raise PreconditionFailed(
                f"import {request.import_id} is of {record.source} ({record.total} photos); "
                f"this request names {request.source} ({request.total} photos)"
            )
        if request.model_id and request.model_id != record.model_id:
            raise PreconditionFailed(
                f"import {request.import_id} enrols with {record.model_id}, not {request.model_id}"
            )
        return await self._status(record, with_done_items=True)

    async def _record_start(self, record: ingest_pb2.ImportRecord) -> None:
        """The import's gallery.import_started audit event, by whoever started it, with its rules."""
        await self._audit.publish(
            "gallery.import_started",
            actor=record.started_by,
            details={
                "import_id": record.import_id,
                "source": record.source,
                "total": record.total,
                "model_id": record.model_id,
                "rules": {"min_face_px": record.rules.min_face_px, "min_blur": record.rules.min_blur},
            },
            event_id=f"{record.import_id}.started",
        )

    async def submit(
        self, principal: Principal, request: gateway_pb2.SubmitImportItemsRequest
    ) -> gateway_pb2.SubmitImportItemsResponse:
        """Queue photos for the workers; settle at once the ones no worker could take."""
        require(principal, Permission.SUBMIT_IMPORT)
        record, _ = await self._record(request.import_id)
        if record.HasField("finished_at"):
            raise PreconditionFailed(f"import {record.import_id} has finished")
        queued = await self._queued()
        if queued + len(request.items) > self._backlog:
            raise Overloaded(f"{queued} photos are queued for import; try again shortly")
        outside = [item.item for item in request.items if not 0 <= item.item < record.total]
        if outside:  # refuse the whole batch before queuing any of it
            raise InvalidInput(f"item {outside[0]} is outside the import's 0..{record.total - 1}")
        answer = gateway_pb2.SubmitImportItemsResponse()
        # An import recorded before imports named their model enrols with the active one.
        model_id = record.model_id or await self._routes.import_model("")
        detect = Stage("detect", model_id)
        for item in request.items:
            ref = ingest_pb2.ItemRef(
                import_id=record.import_id,
                item=item.item,
                subject_id=item.subject_id,
                image_ref=item.image_ref[:1000],
                metadata=dict(item.metadata),
                submitted_by=principal.user,
                import_started_at=record.started_at,
                model_id=model_id,
                keep_origin=item.keep_origin,
            )
            refused = self._refusal(ref, item)
            if refused is not None:
                await publish_result(self._bus, refused, "gateway")
                answer.settled += 1
                continue
            sha256 = hashlib.sha256(item.image).hexdigest()
            await self._carry_face_box(ref, sha256)
            await self._keep_photo(ref, item.image, sha256)
            await self._register.register(ref, sha256)
            await hand_on(self._bus, detect, ingest_pb2.DetectWork(item=ref, image=item.image, rules=record.rules))
            answer.queued += 1
        return answer

    async def _carry_face_box(self, ref: ingest_pb2.ItemRef, sha256: str) -> None:
        """For a photo already enrolled under this subject (a record being re-embedded): the face
        box its stored photo was enrolled with, read from the photo store (never taken from the
        caller), so the new model's detector picks that face of a group photo."""
        header = await self._photos.header("gallery", record_id_for(ref.subject_id, sha256))
        box = header.box() if header is not None else None
        if box is not None:
            ref.face_box.CopyFrom(box)

    async def _keep_photo(self, ref: ingest_pb2.ItemRef, image: bytes, sha256: str) -> None:
        """Store the photo, encrypted, under the record it will make, before it is queued; one
        already stored for that record (the same photo of the same subject) is kept. A photo whose
        item ends rejected or failed is taken back when its result is read (``_catch_up``): on a
        status read, or at the sweep's next round (``settle_open``)."""
        header = PhotoHeader(
            "gallery",
            record_id_for(ref.subject_id, sha256),
            sha256,
            subject_id=ref.subject_id,
            origin=f"{ref.import_id}/{ref.item}",
        )
        await self._photos.put(header, image, replace=False, metadata=dict(ref.metadata))

    async def _take_back_photo(self, result: ingest_pb2.ItemResult, by_matcher: bool) -> None:
        """Delete the photo stored for an item that made no record, if this item stored it and the
        matcher will not enrol it (``ItemRegister.take_back``). The register is written only for a
        photo still there to take back: a tally read again from the start (a restart, an evicted
        tally) finds the photos it took back gone and writes nothing."""
        image_sha256 = result.image_sha256
        if not image_sha256 or result.outcome not in PROBLEMS:
            return
        record_id = record_id_for(result.item.subject_id, image_sha256)
        header = await self._photos.header("gallery", record_id)
        if header is None or header.origin != f"{result.item.import_id}/{result.item.item}":
            return
        if await self._register.take_back(result.item, by_matcher):
            await self._photos.delete("gallery", record_id)
        else:
            log.warning("import_photo_kept", import_id=result.item.import_id, item=result.item.item)

    def _refusal(self, ref: ingest_pb2.ItemRef, item: gateway_pb2.ImportItem) -> ingest_pb2.ItemResult | None:
        """The result of a photo the gateway refuses itself, or None when it goes to the workers."""
        size = item.file_bytes or len(item.image)
        if size > self._max_image_bytes:
            why = f"the photo is {size} bytes; the limit is {self._max_image_bytes}"
            return rejection(ref, ingest_pb2.REJECT_REASON_TOO_LARGE, why, "gateway")
        if item.unreadable or not item.image:
            why = item.unreadable or "the file is empty"
            return rejection(ref, ingest_pb2.REJECT_REASON_UNREADABLE, why, "gateway")
        try:
            check_new_subject_id(item.subject_id)
            if item.keep_origin and not _is_origin(item.keep_origin):
                raise InvalidInput("keep_origin must be <import id>/<item>")
            check_metadata(item.metadata)
        except CandorError as exc:
            return rejection(ref, ingest_pb2.REJECT_REASON_INVALID, exc.message, "gateway")
        return None

    async def _queued(self) -> int:
        """Photos waiting in the work-queue streams, at every stage."""
        infos = [await self._bus.jetstream.stream_info(ingest_stream(stage)) for stage in INGEST_STAGES]
        return sum(int(info.state.messages) for info in infos)

    async def status(self, principal: Principal, request: gateway_pb2.GetImportRequest) -> gateway_pb2.ImportStatus:
        """Progress of a running or finished import."""
        require(principal, Permission.GET_IMPORT)
        record, _ = await self._record(request.import_id)
        return await self._status(record, request.with_done_items)

    async def _status(self, record: ingest_pb2.ImportRecord, with_done_items: bool) -> gateway_pb2.ImportStatus:
        tally = await self._tally(record)
        status = tally.status(record, with_done_items)
        if status.done == record.total and not record.HasField("finished_at"):
            status.record.CopyFrom(await self._finish(record, status))
        return status

    async def _finish(
        self, record: ingest_pb2.ImportRecord, status: gateway_pb2.ImportStatus
    ) -> ingest_pb2.ImportRecord:
        """Audit the import's counts, then mark it finished. In that order: a read cut short, or a
        gateway killed, between the two leaves the import unfinished, and the next read (or the
        sweep's) records both, the event once (one event id). The other order would leave a
        finished import that no read audits."""
        current, revision = await self._record(record.import_id)
        if current.HasField("finished_at"):
            return current
        await self._audit.publish(
            "gallery.import_finished",
            actor=current.started_by,
            details={
                "import_id": current.import_id,
                "source": current.source,
                "total": current.total,
                "enrolled": status.enrolled,
                "duplicates": status.duplicates,
                "rejected": status.rejected,
                "failed": status.failed,
                "rejected_by_reason": {
                    ingest_pb2.RejectReason.Name(r.reason): r.count for r in status.rejected_by_reason
                },
            },
            event_id=f"{current.import_id}.finished",
        )
        current.finished_at.GetCurrentTime()
        with contextlib.suppress(KeyWrongLastSequenceError):  # another gateway finished it
            await self.bucket.update(current.import_id, current.SerializeToString(), last=revision)
        log.info("import_finished", import_id=current.import_id, total=current.total, enrolled=status.enrolled)
        return current

    async def results(
        self, principal: Principal, request: gateway_pb2.ListImportResultsRequest
    ) -> gateway_pb2.ListImportResultsResponse:
        """A page of results in item order (only the rejected and failed ones, when asked)."""
        require(principal, Permission.LIST_IMPORT_RESULTS)
        record, _ = await self._record(request.import_id)
        limit = request.limit or 1000
        if not 1 <= limit <= 10_000:
            raise InvalidInput("limit must be between 1 and 10000")
        tally = await self._tally(record)
        start = request.after_item + 1 if request.HasField("after_item") else 0
        wanted = np.isin(tally.outcomes[start:], PROBLEMS) if request.problems_only else tally.outcomes[start:] != 0
        items = (np.flatnonzero(wanted)[:limit] + start).tolist()
        answer = gateway_pb2.ListImportResultsResponse()
        for item in items:
            message = await self._bus.jetstream.get_last_msg(
                INGEST_RESULTS_STREAM, tally.subject(record.import_id, item)
            )
            tally.settle(answer.results.add(), record.import_id, item, message.data or b"")
        return answer

    async def settle_open(self) -> int:
        """Bring every unfinished import up to date as a status read does: the stored photos of
        items that made no record are taken back, and an import whose photos all have results is
        recorded finished. The gateway's sweep calls this, so an import whose importer went away
        (a killed job, an integration that does not poll) still ends (``_finish`` logs each).
        One import that cannot be settled is logged and passed by; returns how many were."""
        try:
            import_ids = await self.bucket.keys()
        except NoKeysError:
            return 0
        failed = 0
        for import_id in import_ids:
            try:
                record, _ = await self._record(import_id)
                if not record.HasField("finished_at"):
                    await self._status(record, with_done_items=False)
            except (NotFound, InvalidInput):  # gone since the listing, or a key no import has
                continue
            except (CandorError, NatsError) as exc:  # one import's trouble leaves the others
                failed += 1
                log.warning("import_settle_failed", import_id=import_id, error=str(exc) or type(exc).__name__)
        return failed

    # --- the tally ---------------------------------------------------------------------------

    async def _tally(self, record: ingest_pb2.ImportRecord) -> Tally:
        """The import's tally, brought up to date with the results stored since the last read."""
        lock = self._tally_locks.setdefault(record.import_id, asyncio.Lock())
        async with lock:
            tally = self._tallies.get(record.import_id)
            if tally is None or tally.total != record.total:
                tally = Tally(record.total)
            await self._catch_up(record.import_id, tally)
            self._tallies[record.import_id] = tally
            self._tallies.move_to_end(record.import_id)
            while len(self._tallies) > CACHED_TALLIES:
                evicted, _ = self._tallies.popitem(last=False)
                self._tally_locks.pop(evicted, None)
            return tally

    async def _catch_up(self, import_id: str, tally: Tally) -> None:
        """Read the import's results stored after ``tally.next_sequence`` with a short-lived consumer."""
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=tally.next_sequence,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
            max_waiting=1,
        )
        subject = f"{INGEST_RESULT_PREFIX}.{import_id}.>"
        try:
            async with one_read_consumer(self._bus.jetstream, INGEST_RESULTS_STREAM, subject, config) as read:
                await self._take_results(read, tally)
        except NotFoundError as exc:
            raise PreconditionFailed("the import results stream is missing") from exc

    async def _take_results(self, read: OneRead, tally: Tally) -> None:
        """Add the results ``read`` holds to ``tally``, taking back what they settle."""
        if read.pending == 0:
            return
        while messages := await fetch_batch(read.subscription, 1000, timeout=0.5):
            for msg in messages:
                # A photo's stored photo goes only on a result that stands: one a party
                # earlier in the line stored after the matcher enrolled it takes nothing back.
                standing = tally.take(msg.subject, msg.data)
                if standing is not None:
                    await self._take_back_photo(standing, tally.source(standing.item.item) == MATCH.name)
                tally.next_sequence = msg.metadata.sequence.stream + 1
            if messages[-1].metadata.num_pending == 0:
                return

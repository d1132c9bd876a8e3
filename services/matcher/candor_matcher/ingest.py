"""The matcher's import worker: enrols each photo's vector and records how the photo ended."""

from __future__ import annotations

from typing import Protocol

from candor.common.v1 import common_pb2
from candor.ingest.v1 import ingest_pb2
from candor_kit import AuditPublisher, Bus, CandorError, PreconditionFailed
from candor_kit.identifiers import check_metadata, check_new_subject_id
from candor_kit.ingest import MATCH, ItemRegister, publish_result, rejection
from candor_matcher.gallery import Enrolment, GalleryIndex, GalleryModel, record_id_for
from candor_matcher.naming import ImportNaming, NamedPhoto
from candor_matcher.tombstones import Tombstones


class VectorEnroller(Protocol):
    """What the stage needs of the matching service: to enrol one vector, idempotently."""

    async def enrol_vector(
        self, model_ref: common_pb2.ModelRef, record: Enrolment
    ) -> tuple[GalleryIndex, str, bool]:  # pragma: no cover - a protocol
        """Enrols ``record``; the index it went to, its record id and whether it was new."""
        ...


class MatchStage:
    """Enrols an import's photo (idempotently: the record id derives from subject and photo)."""

    def __init__(
        self, bus: Bus, service: VectorEnroller, tombstones: Tombstones, audit: AuditPublisher, batch: int
    ) -> None:
        """``batch``: the photos the worker settles at once (CANDOR_IMPORT_BATCH), named together."""
        self._bus = bus
        self._service = service
        self._tombstones = tombstones
        self._audit = audit
        self._register = ItemRegister(bus)
        self._naming = ImportNaming(audit, batch)

    async def __call__(self, work: ingest_pb2.MatchWork) -> None:
        """Enrol, audit the enrolment (with the photos enrolled beside it: `naming`), and store the
        photo's result: only an item the gateway queued, as it queued it (another stage's user
        could otherwise make one up), and has not taken back (``ItemRegister.claim``)."""
        item = work.item
        problem, queued = await self._register.claim(item, work.image_sha256)
        if problem:
            await self._audit.publish(
                "matcher.import_item_refused",
                actor="service:matcher",
                details={
                    "import_id": item.import_id[:100],
                    "item": item.item,
                    "subject_id": item.subject_id[:200],
                    "claimed_submitted_by": item.submitted_by[:200],
                    "reason": problem,
                },
            )
            if queued:  # the gateway's item was changed on the way: it ends here, rejected
                await self._reject(item, ingest_pb2.REJECT_REASON_INVALID, problem)
            return
        try:
            check_new_subject_id(item.subject_id)
            check_metadata(item.metadata)
            model = GalleryModel.from_ref(work.model)
        except CandorError as exc:
            await self._reject(item, ingest_pb2.REJECT_REASON_INVALID, exc.message)
            return
        expunged = await self._tombstones.expunged_since(
            item.subject_id, record_id_for(item.subject_id, work.image_sha256), item.import_started_at
        )
        if expunged:
            await self._reject(item, ingest_pb2.REJECT_REASON_EXPUNGED, expunged)
            return
        enrolment = Enrolment(
            subject_id=item.subject_id,
            image_sha256=work.image_sha256,
            vector=list(work.embedding.values),
            metadata=dict(item.metadata),
            # A re-embedded record keeps its first origin, so its photo can still be found.
            origin=item.keep_origin or f"{item.import_id}/{item.item}",
            image_ref=item.image_ref,
        )
        try:
            _, record_id, created = await self._service.enrol_vector(work.model, enrolment)
        except PreconditionFailed as exc:  # a model the gallery does not take
            await self._reject(item, ingest_pb2.REJECT_REASON_INVALID, exc.message)
            return
        record = {
            "item": item.item,
            "subject_id": item.subject_id,
            "record_id": record_id,
            "created": created,
            "image_sha256": work.image_sha256,
            "image_ref": item.image_ref,
        }
        await self._naming.name(
            NamedPhoto(item.import_id, item.item, item.submitted_by, (model.id, model.version), record)
        )
        outcome = ingest_pb2.OUTCOME_ENROLLED if created else ingest_pb2.OUTCOME_DUPLICATE
        result = ingest_pb2.ItemResult(
            item=item,
            outcome=outcome,
            record_id=record_id,
            image_sha256=work.image_sha256,
            model=work.model,
            stage="matcher",
            detail="" if created else "this subject's photo is already enrolled",
        )
        await publish_result(self._bus, result, MATCH.name)

    async def _reject(self, item: ingest_pb2.ItemRef, reason: ingest_pb2.RejectReason.ValueType, detail: str) -> None:
        """End the photo rejected, for ``reason``, as the match stage's result."""
        await publish_result(self._bus, rejection(item, reason, detail, "matcher"), MATCH.name)

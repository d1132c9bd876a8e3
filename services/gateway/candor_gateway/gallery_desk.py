"""The gallery's keeping at the gateway: enrolling a face (with the active model and any
re-embedding target), expunging a subject or one record with their photos, and reading a
record's photo back for re-embedding; each refused or done call is audited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from candor.common.v1 import common_pb2
from candor.gateway.v1 import gateway_pb2
from candor.matcher.v1 import matcher_pb2
from candor_gateway.access import Permission, require
from candor_gateway.audit_reader import AuditReader
from candor_gateway.idempotency import Operation
from candor_gateway.model_calls import Chosen, ModelCalls, model_details
from candor_gateway.photos import PhotoHeader, PhotoStore, box_dict, eye_list
from candor_gateway.refusals import audit_refusal
from candor_gateway.slots import PhotoSlots
from candor_kit import AuditPublisher, Bus, CandorError, InvalidInput, NotFound, subjects
from candor_kit.audit_events import AlreadyRecorded
from candor_kit.errors import NoAnswer
from candor_kit.identifiers import check_metadata, check_new_subject_id, check_subject_id, record_id_for
from candor_kit.tokens import Principal

log = structlog.get_logger("candor.gateway.gallery")

#: How many unreadable photos an expunge names in its audit event and log (all are counted).
UNPLACED_NAMED = 50


@dataclass(frozen=True)
class Enrolled:
    """One model's enrolment of a photo."""

    response: matcher_pb2.EnrollResponse
    model: common_pb2.ModelRef
    chosen: Chosen


class GalleryDesk:
    """Enrolment and expunging, for gallery admins."""

    def __init__(
        self,
        bus: Bus,
        audit: AuditPublisher,
        reader: AuditReader,
        photos: PhotoStore,
        calls: ModelCalls,
        slots: PhotoSlots,
        min_face_px: int,
        timeout_s: float,
    ) -> None:
        self._bus = bus
        self._audit = audit
        self._reader = reader
        self._photos = photos
        self._calls = calls
        self._slots = slots
        self._min_face_px = min_face_px
        self._timeout = timeout_s

    async def enroll(
        self,
        principal: Principal,
        image: bytes,
        subject_id: str,
        face_index: int | None,
        metadata: Mapping[str, str],
        image_ref: str,
        operation: Operation,
    ) -> tuple[matcher_pb2.EnrollResponse, common_pb2.ModelRef, common_pb2.FaceQuality]:
        """Add one face of a photo to the gallery under a subject id: with the active model, and
        with the model the gallery is being re-embedded into, if any, so the switch loses nothing.
        Recorded as ``operation``'s id: an enrolment redone under it (its first run failed, or its
        gateway died, before answering) that finds it recorded is answered as recorded, and not
        recorded again; one that finds its record made by the first run says it created it."""
        operation_id = operation.id
        try:
            require(principal, Permission.ENROLL)
            check_new_subject_id(subject_id)
            check_metadata(metadata)
            if "booking-sync" in principal.roles and not metadata.get("source", "").strip():
                # What a sync enrols must be traceable to the booking record it came from.
                raise InvalidInput(
                    "a booking system's enrolment names where the photo came from: set metadata 'source' "
                    "(the booking system and its record number)"
                )
            if len(image_ref) > 1000:
                raise InvalidInput("image_ref takes at most 1000 characters")
            with self._slots.claim():
                enrolled = await self._enroll_face(
                    image,
                    subject_id,
                    face_index,
                    metadata,
                    image_ref,
                    common_pb2.Origin(actor=principal.user, request_id=operation_id),
                )
        except CandorError as error:
            await audit_refusal(self._audit, "enroll", error, principal.user, image=image)
            raise
        first = enrolled[0]
        # The matcher finds the record made when an earlier run under this id made it (its gateway
        # died after the matcher's step): that run's enrolment created it.
        created = first.response.created or (
            operation.redone and await self._reader.enrolment_created(principal.user, operation_id, first.model.id)
        )
        details: dict[str, Any] = {
            "subject_id": subject_id,
            "record_id": first.response.record_id,
            "created": created,
            "image_sha256": first.chosen.image_sha256,
            "image_ref": image_ref or None,
            "model": model_details(first.model),
            "photo_stored": True,
        }
        if len(enrolled) > 1:
            details["also_enrolled_with"] = model_details(enrolled[1].model)
        response = matcher_pb2.EnrollResponse(record_id=first.response.record_id, created=created)
        try:
            await self._audit.publish(
                "enroll.completed", first=True, event_id=operation_id, actor=principal.user, details=details
            )
        except AlreadyRecorded:  # the record was made then: "created" is what that call did
            recorded = await self._reader.recorded(
                on_behalf_of=principal.user, kind="enroll.completed", event_id=operation_id
            )
            response = matcher_pb2.EnrollResponse(record_id=response.record_id, created=bool(recorded.get("created")))
        return response, first.model, first.chosen.face.quality

    async def _enroll_face(
        self,
        image: bytes,
        subject_id: str,
        face_index: int | None,
        metadata: Mapping[str, str],
        image_ref: str,
        origin: common_pb2.Origin,
    ) -> list[Enrolled]:
        active, target = await self._calls.routes.for_enrolment()
        chosen = await self._calls.choose_face(image, face_index, active)
        if chosen.face.quality.face_size_px < self._min_face_px:
            raise InvalidInput(
                f"the face is {chosen.face.quality.face_size_px} px wide; enrolment needs {self._min_face_px}"
            )
        faces = [(active, chosen)]
        if target is not None:
            faces.append((target, await self._calls.same_face(image, chosen, target, picked=face_index is not None)))
        embedded = [(chosen_here, *await self._calls.embed(chosen_here.face, route)) for route, chosen_here in faces]
        # The photo is stored before the record exists, so no record is ever without its photo;
        # a photo stored here for a record that then fails to enrol is taken back.
        record_id = record_id_for(subject_id, chosen.image_sha256)
        had_photo = await self._photos.header("gallery", record_id) is not None
        header = PhotoHeader(
            "gallery",
            record_id,
            chosen.image_sha256,
            face_box=box_dict(chosen.face.box),
            subject_id=subject_id,
            origin="enroll",
            eyes=eye_list(chosen.face),
        )
        await self._photos.put(header, image, metadata=metadata)
        try:
            return await self._enroll_embedded(embedded, subject_id, metadata, image_ref, origin)
        except BaseException as failed:
            if isinstance(failed, CandorError) and not isinstance(failed, NoAnswer):
                # A refusal the matcher sent, or a request that never left: no record was made.
                if not had_photo:
                    await self._photos.delete("gallery", record_id)
                raise
            # No answer (paused, overloaded), NATS gone mid-request, the gateway stopping: the
            # matcher may yet enrol the face, so the photo stays; a record without its photo is
            # worse than a photo a retry will use or the subject's expunge will find by its header.
            log.warning("enrol_outcome_unknown", record_id=record_id, photo_kept=True)
            if isinstance(failed, NoAnswer):
                raise NoAnswer(
                    f"{failed}. The face may have been enrolled all the same: send the same enrolment "
                    "again to know (the same photo of a subject is enrolled once)"
                ) from failed
            raise

    async def _enroll_embedded(
        self,
        embedded: list[tuple[Chosen, common_pb2.Embedding, common_pb2.ModelRef]],
        subject_id: str,
        metadata: Mapping[str, str],
        image_ref: str,
        origin: common_pb2.Origin,
    ) -> list[Enrolled]:
        enrolled = []
        # The re-embedding's target first: a photo it cannot take is not enrolled at all.
        for chosen_here, embedding, model in reversed(embedded):
            response = await self._bus.request(
                subjects.MATCH_ENROLL,
                matcher_pb2.EnrollRequest(
                    subject_id=subject_id,
                    model=model,
                    embedding=embedding,
                    image_sha256=chosen_here.image_sha256,
                    metadata=dict(metadata),
                    image_ref=image_ref,
                    origin=origin,
                ),
                matcher_pb2.EnrollResponse,
                self._timeout,
            )
            enrolled.append(Enrolled(response, model, chosen_here))
        return enrolled[::-1]

    async def delete_subject(
        self, principal: Principal, subject_id: str, reason: str, operation: Operation
    ) -> gateway_pb2.DeleteSubjectResponse:
        """Expunge a subject from every gallery, and its stored photos, recorded as ``operation``'s
        id: an expunge redone under the same id (its first run failed, or its gateway died, before
        answering) that finds it recorded is answered from that record, and not recorded again;
        one that finds nothing left to delete records and answers what its first run deleted."""
        operation_id = operation.id
        try:
            require(principal, Permission.DELETE)
            check_subject_id(subject_id)
            if not reason.strip():
                raise InvalidInput("a reason is required to delete a subject")
            deleted = await self._bus.request(
                subjects.MATCH_DELETE_SUBJECT,
                matcher_pb2.DeleteSubjectRequest(
                    # The matcher's record names the expunge's id: redone after a gateway died, the
                    # matcher's first record (the records it deleted then) pairs with the expunge's.
                    subject_id=subject_id,
                    origin=common_pb2.Origin(actor=principal.user, request_id=operation_id),
                ),
                matcher_pb2.DeleteSubjectResponse,
                self._timeout,
            )
        except CandorError as error:
            await audit_refusal(self._audit, "delete", error, principal.user)
            raise
        records = deleted.deleted_records or (
            await self._reader.expunged_records(principal.user, operation_id) if operation.redone else 0
        )
        photos, unplaced = await self._delete_subject_photos(subject_id, deleted.record_ids)
        if unplaced:
            log.warning("expunge_left_unreadable_photos", count=len(unplaced), names=unplaced[:UNPLACED_NAMED])
        try:
            await self._audit.publish(
                "subject.deleted",
                first=True,
                event_id=operation_id,
                actor=principal.user,
                details={
                    "subject_id": subject_id,
                    "reason": reason,
                    "records": records,
                    "photos_deleted": photos,
                    "photos_unreadable": len(unplaced),
                    # Bounded: the event must stay within a bus message however many there are.
                    "photos_unreadable_names": unplaced[:UNPLACED_NAMED],
                },
            )
        except AlreadyRecorded:  # what was expunged then is on the chain; nothing was left now
            recorded = await self._reader.recorded(
                on_behalf_of=principal.user, kind="subject.deleted", event_id=operation_id
            )
            return gateway_pb2.DeleteSubjectResponse(
                deleted_records=int(recorded.get("records", 0)),
                unreadable_photos=int(recorded.get("photos_unreadable", 0)),
            )
        return gateway_pb2.DeleteSubjectResponse(deleted_records=records, unreadable_photos=len(unplaced))

    async def _delete_subject_photos(self, subject_id: str, record_ids: Sequence[str]) -> tuple[int, list[str]]:
        """Delete an expunged subject's stored photos: those of the records the matcher expunged,
        by name, whatever their headers say, and those whose headers name the subject (a photo
        kept with no record, from an enrolment cut short). Returns how many were deleted and the
        names of the unreadable photos no expunged record names: whose they are cannot be told."""
        headers, unreadable = await self._photos.read_headers("gallery", lambda h: h.subject_id == subject_id)
        keys = set(record_ids) | {h.key for h in headers}
        unplaced = sorted(name for name in unreadable if name.removeprefix("gallery/") not in keys)
        return await self._delete_photos(sorted(keys)), unplaced

    async def _delete_photos(self, record_ids: Sequence[str]) -> int:
        """Delete the stored photos of expunged records; returns how many there were."""
        return sum([await self._photos.delete("gallery", record_id) for record_id in record_ids])

    async def delete_record(
        self, principal: Principal, record_id: str, reason: str
    ) -> matcher_pb2.DeleteRecordResponse:
        """Expunge one enrolled photo, keeping the subject's other records.

        The record goes first, then the deletion's record on the chain, then the stored photo: while
        the photo is stored, a deletion is unfinished (a gateway died after the matcher deleted the
        record), and a deletion sent again finishes it instead of answering NOT_FOUND and keeping
        an expunged photo. The chain's record has one id for each stored photo of the record (read
        before the matcher is asked), so racing or repeated deletions record it once."""
        try:
            require(principal, Permission.DELETE_RECORD)
            if not reason.strip():
                raise InvalidInput("a reason is required to delete a record")
            photo = await self._photos.header("gallery", record_id)
            deleted = await self._bus.request(
                subjects.MATCH_DELETE_RECORD,
                matcher_pb2.DeleteRecordRequest(record_id=record_id, origin=common_pb2.Origin(actor=principal.user)),
                matcher_pb2.DeleteRecordResponse,
                self._timeout,
            )
            if not deleted.deleted and photo is None:
                raise NotFound(f"no gallery holds record {record_id}")
        except CandorError as error:
            await audit_refusal(self._audit, "delete_record", error, principal.user)
            raise
        subject_id = deleted.subject_id or (photo.subject_id if photo else "")
        await self._audit.publish(
            "record.deleted",
            # No photo: no retry can find the deletion unfinished, and no racer can record it too
            # (one that read no photo found the record deleted already).
            event_id=f"record-deleted/{record_id}/{photo.stored_at}" if photo else None,
            actor=principal.user,
            details={
                "record_id": record_id,
                "subject_id": subject_id,
                "reason": reason,
                "photos_deleted": 1 if photo else 0,
            },
        )
        if photo is not None:
            await self._photos.delete("gallery", record_id)
        return matcher_pb2.DeleteRecordResponse(deleted=True, subject_id=subject_id)

    async def record_photo(self, principal: Principal, record_id: str) -> gateway_pb2.Photo:
        """An enrolled record's stored photo, for a gallery admin (to re-embed it); audited."""
        try:
            require(principal, Permission.GET_RECORD_PHOTO)
            photo = await self._photos.get("gallery", record_id)
            if photo is None:
                raise NotFound(f"no photo is stored for record {record_id}")
        except CandorError as error:
            await audit_refusal(self._audit, "photo.read", error, principal.user)
            raise
        await self._audit.publish(
            "photo.read",
            actor=principal.user,
            details={"record_id": record_id, "subject_id": photo.header.subject_id, "sha256": photo.header.sha256},
        )
        return photo.message()

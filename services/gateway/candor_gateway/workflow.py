"""The gateway's orchestration: detect → embed → match, with every outcome audited.

Audit is fail-closed: if the event cannot be stored durably, the caller gets UNAVAILABLE and no
result.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from candor.audit.v1 import audit_pb2
from candor.common.v1 import common_pb2
from candor.detector.v1 import detector_pb2
from candor.embedder.v1 import embedder_pb2
from candor.gateway.v1 import gateway_pb2
from candor.matcher.v1 import matcher_pb2
from candor_gateway.access import Permission, require
from candor_gateway.audit_reader import PAGE, AuditReader
from candor_gateway.calibration import CalibrationGate
from candor_gateway.photos import PhotoHeader, PhotoStore, box_dict, eye_list
from candor_gateway.policy import PolicyHolder
from candor_gateway.proficiency import ProficiencySeeder
from candor_gateway.quota import SearchQuota
from candor_gateway.refusals import audit_refusal
from candor_gateway.reviews import ReviewDesk
from candor_gateway.routes import ModelRoutes, Route
from candor_kit import (
    AuditPublisher,
    Bus,
    CandorError,
    InvalidInput,
    NotFound,
    Overloaded,
    ServiceUnavailable,
    TooLarge,
    subjects,
)
from candor_kit.boxes import same_face
from candor_kit.identifiers import check_metadata, check_new_subject_id, check_subject_id, record_id_for
from candor_kit.model_files import DLIB_RESNET_MODEL_ID
from candor_kit.policy import MAX_CASE_CHARS, is_printable
from candor_kit.tokens import Principal

MATCH_ENROLL = subjects.MATCH_ENROLL
MATCH_SEARCH = subjects.MATCH_SEARCH
MATCH_DELETE = subjects.MATCH_DELETE_SUBJECT
MATCH_DELETE_RECORD = subjects.MATCH_DELETE_RECORD
AUDIT_VERIFY = subjects.AUDIT_VERIFY
AUDIT_QUERY = subjects.AUDIT_QUERY

log = structlog.get_logger("candor.gateway")
T = TypeVar("T")


@dataclass(frozen=True)
class Chosen:
    """The face picked from a photo, with the photo's hash."""

    face: common_pb2.DetectedFace
    image_sha256: str


@dataclass(frozen=True)
class Enrolled:
    """One model's enrolment of a photo."""

    response: matcher_pb2.EnrollResponse
    model: common_pb2.ModelRef
    chosen: Chosen


@dataclass(frozen=True)
class Matched:
    """A completed search."""

    search_id: str
    candidates: list[common_pb2.Candidate]
    model: common_pb2.ModelRef
    probe_sha256: str
    quality: common_pb2.FaceQuality


class PhotoSlots:
    """Caps how many photos the gateway processes at once; beyond the cap a call is shed
    (RESOURCE_EXHAUSTED, audited) rather than queued, so a burst cannot pile photos up in memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_use = 0

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Hold one slot for the duration of the block."""
        if self._in_use >= self.limit:
            raise Overloaded(f"{self.limit} photos are already being processed; retry shortly")
        self._in_use += 1
        try:
            yield
        finally:
            self._in_use -= 1


@contextlib.asynccontextmanager
async def background(work: Coroutine[Any, Any, T]) -> AsyncIterator[asyncio.Task[T]]:
    """Run ``work`` as a task for the duration of the block; cancelled if the block leaves early."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, CandorError):
            await task


class StageClock:
    """Milliseconds spent in each stage of a request, for the log line that closes it."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.ms: dict[str, float] = {}

    def mark(self, stage: str) -> None:
        """Close the stage that ran since the last mark."""
        now = time.perf_counter()
        self.ms[f"{stage}_ms"] = round((now - self._last) * 1000, 2)
        self._last = now


class Workflow:
    """The use cases behind the public API."""

    def __init__(
        self,
        bus: Bus,
        audit: AuditPublisher,
        policy: PolicyHolder,
        calibration: CalibrationGate,
        timeout_s: float,
        max_image_bytes: int,
        min_face_px: int,
        photos: PhotoStore,
        max_inflight: int = 16,
    ) -> None:
        self._bus = bus
        self.routes = ModelRoutes(bus, timeout_s)
        self._audit = audit
        self._policy = policy
        self._calibration = calibration
        self._timeout = timeout_s
        self._max_image_bytes = max_image_bytes
        self._min_face_px = min_face_px
        self._slots = PhotoSlots(max_inflight)
        self._reader = AuditReader(bus, audit, timeout_s)
        self._quota = SearchQuota(self._reader)
        self.photos = photos
        self.reviews = ReviewDesk(self._reader, audit, policy, photos, self.locate_face)
        self.proficiency = ProficiencySeeder(
            audit, photos, policy, self.routes.for_search, self._choose_face, self._embed, calibration.calibrated
        )

    # --- refusals ------------------------------------------------------------------------------

    async def audit_refusal(
        self,
        action: str,
        error: CandorError,
        actor: str,
        case_number: str = "",
        purpose: str = "",
        image: bytes | None = None,
    ) -> None:
        """Record a refused call: who, what, which rule, why, and the photo's SHA-256 (never the photo)."""
        await audit_refusal(self._audit, action, error, actor, case_number=case_number, purpose=purpose, image=image)

    async def audit_session_ended(self, principal: Principal) -> None:
        """Record a sign-out: the user's token is revoked from now on."""
        await self._audit.publish(
            "session.ended", actor=principal.user, details={"token_expires_at": principal.expires_at or None}
        )

    # --- detection -----------------------------------------------------------------------------

    async def detect(self, image: bytes, include_chips: bool, route: Route) -> detector_pb2.DetectResponse:
        """All faces of a photo, found by the detector of the route's model."""
        if not image:
            raise InvalidInput("the image is empty")
        if len(image) > self._max_image_bytes:
            raise TooLarge(f"the image is {len(image)} bytes; the limit is {self._max_image_bytes}")
        request = detector_pb2.DetectRequest(image=image, include_chips=include_chips)
        try:
            return await self._bus.request(route.detect, request, detector_pb2.DetectResponse, self._timeout)
        except ServiceUnavailable as error:
            raise _model_not_running(route, "detector") from error

    async def locate_face(self, image: bytes, box: common_pb2.Box | None = None) -> common_pb2.DetectedFace | None:
        """A stored photo's face, found by the active model's detector: the one overlapping
        ``box`` when given, else its only face; None when there is no such face."""
        detected = await self.detect(image, include_chips=False, route=await self.routes.for_search())
        if box is not None:
            index = same_face(detected.faces, box)
            return detected.faces[index] if index is not None else None
        return detected.faces[0] if len(detected.faces) == 1 else None

    async def _choose_face(self, image: bytes, face_index: int | None, route: Route) -> Chosen:
        detected = await self.detect(image, include_chips=True, route=route)
        faces = detected.faces
        if not faces:
            raise InvalidInput("no face was found in the image")
        if face_index is None:
            if len(faces) > 1:
                raise InvalidInput(f"the image has {len(faces)} faces; choose one with face_index")
            face_index = 0
        if not 0 <= face_index < len(faces):
            raise InvalidInput(f"face_index {face_index} is out of range; the image has {len(faces)} faces")
        return Chosen(face=faces[face_index], image_sha256=detected.image_sha256)

    async def _same_face(self, image: bytes, chosen: Chosen, route: Route, picked: bool) -> Chosen:
        """The face another model's detector finds for ``chosen``: its only face when the caller
        did not pick one (``picked``), else the one whose box overlaps most; refused when none does."""
        detected = await self.detect(image, include_chips=True, route=route)
        faces = list(detected.faces)
        if len(faces) == 1 and not picked:
            return Chosen(face=faces[0], image_sha256=detected.image_sha256)
        index = same_face(faces, chosen.face.box)
        if index is None:
            raise InvalidInput(
                f"the detector of {route.model_id}, which the gallery is being re-embedded into, "
                f"does not find this face on its own ({len(faces)} faces found)"
            )
        return Chosen(face=faces[index], image_sha256=detected.image_sha256)

    async def _embed(
        self, face: common_pb2.DetectedFace, route: Route
    ) -> tuple[common_pb2.Embedding, common_pb2.ModelRef]:
        try:
            reply = await self._bus.request(
                route.embed, embedder_pb2.EmbedRequest(chips=[face.chip]), embedder_pb2.EmbedResponse, self._timeout
            )
        except ServiceUnavailable as error:
            raise _model_not_running(route, "embedder") from error
        if route.model_id and reply.model.id != route.model_id:
            raise ServiceUnavailable(f"an embedder of {reply.model.id} answered for {route.model_id}")
        return reply.embeddings[0], reply.model

    # --- use cases -----------------------------------------------------------------------------

    async def search(self, principal: Principal, request: gateway_pb2.SearchRequest) -> Matched:
        """Search the gallery for a probe under the policy in force; refusals and results are both audited."""
        search_id = str(uuid.uuid4())
        stages = StageClock()
        policy = self._policy.current
        case_number, purpose = request.case_number, request.purpose
        authorisation = request.authorisation_reference.strip()
        image = request.probe_image
        try:
            require(principal, Permission.SEARCH)
            limit = policy.check_search(case_number, purpose, authorisation, request.max_candidates)
            quota = policy.quotas.searches_per_user_per_day
            with self._slots.claim(), self._quota.claim(principal.user, quota):
                # The quota is read from the audit chain while the photo is detected and embedded;
                # nothing is matched before it has answered.
                async with background(self._quota.check(principal.user, quota)) as quota_check:
                    route = await self.routes.for_search()
                    chosen = await self._choose_face(
                        image, request.face_index if request.HasField("face_index") else None, route
                    )
                    policy.check_probe(chosen.face.quality)
                    stages.mark("detect")
                    embedding, model = await self._embed(chosen.face, route)
                    model = policy.threshold(self._calibration.calibrated(model))
                    stages.mark("embed")
                    quota_source = await quota_check
                matched = await self._bus.request(
                    MATCH_SEARCH,
                    matcher_pb2.SearchRequest(
                        model=model,
                        embedding=embedding,
                        limit=limit,
                        max_distance=model.threshold,
                        origin=common_pb2.Origin(
                            actor=principal.user, case_number=case_number, purpose=purpose, request_id=search_id
                        ),
                    ),
                    matcher_pb2.SearchResponse,
                    self._timeout,
                )
                retained = await self._retain(search_id, image, chosen, policy.retention.keep_probes)
        except CandorError as error:
            await self.audit_refusal("search", error, principal.user, case_number, purpose, image)
            raise
        stages.mark("match")
        candidates = list(matched.candidates)
        calibration = self._calibration.fmr_curve(model)
        for candidate in candidates if calibration else ():
            fmr = calibration.fmr_at(candidate.distance)  # type: ignore[union-attr]
            if fmr is not None:
                candidate.calibrated_fmr = fmr
        try:
            await self._audit.publish(
                "search.completed",
                event_id=search_id,
                actor=principal.user,
                case_number=case_number,
                purpose=purpose,
                details={
                    **_search_record(chosen, model, candidates),
                    "authorisation_reference": authorisation,
                    "policy_sha256": self._policy.loaded.sha256,
                    "probe_retained": retained,
                    "max_candidates": limit,
                    "reviews_needed": policy.reviews.needed,
                    "quota_counted_from": quota_source or None,
                },
            )
        except CandorError:
            # Unrecorded, the search did not happen: its probe is not kept either.
            if retained:
                await self.photos.delete("probe", search_id)
            raise
        self._quota.completed(principal.user)
        stages.mark("audit")
        log.info("search_completed", search_id=search_id, candidates=len(candidates), model=model.id, **stages.ms)
        return Matched(search_id, candidates, model, chosen.image_sha256, chosen.face.quality)

    async def _retain(self, search_id: str, image: bytes, chosen: Chosen, keep: bool) -> bool:
        """Keep the probe, encrypted, for its reviewers when the policy says so."""
        if keep:
            header = PhotoHeader(
                "probe", search_id, chosen.image_sha256, face_box=box_dict(chosen.face.box), origin="search",
                eyes=eye_list(chosen.face),
            )  # fmt: skip
            await self.photos.put(header, image)
        return keep

    async def enroll(
        self,
        principal: Principal,
        image: bytes,
        subject_id: str,
        face_index: int | None,
        metadata: Mapping[str, str],
        image_ref: str = "",
    ) -> tuple[matcher_pb2.EnrollResponse, common_pb2.ModelRef, common_pb2.FaceQuality]:
        """Add one face of a photo to the gallery under a subject id: with the active model, and
        with the model the gallery is being re-embedded into, if any, so the switch loses nothing."""
        try:
            require(principal, Permission.ENROLL)
            check_new_subject_id(subject_id)
            check_metadata(metadata)
            if len(image_ref) > 1000:
                raise InvalidInput("image_ref takes at most 1000 characters")
            with self._slots.claim():
                enrolled = await self._enroll_face(image, subject_id, face_index, metadata, image_ref, principal.user)
        except CandorError as error:
            await self.audit_refusal("enroll", error, principal.user, image=image)
            raise
        first = enrolled[0]
        details: dict[str, Any] = {
            "subject_id": subject_id,
            "record_id": first.response.record_id,
            "created": first.response.created,
            "image_sha256": first.chosen.image_sha256,
            "image_ref": image_ref or None,
            "model": _model(first.model),
            "photo_stored": True,
        }
        if len(enrolled) > 1:
            details["also_enrolled_with"] = _model(enrolled[1].model)
        await self._audit.publish("enroll.completed", actor=principal.user, details=details)
        return first.response, first.model, first.chosen.face.quality

    async def _enroll_face(
        self,
        image: bytes,
        subject_id: str,
        face_index: int | None,
        metadata: Mapping[str, str],
        image_ref: str,
        actor: str,
    ) -> list[Enrolled]:
        active, target = await self.routes.for_enrolment()
        chosen = await self._choose_face(image, face_index, active)
        if chosen.face.quality.face_size_px < self._min_face_px:
            raise InvalidInput(
                f"the face is {chosen.face.quality.face_size_px} px wide; enrolment needs {self._min_face_px}"
            )
        faces = [(active, chosen)]
        if target is not None:
            faces.append((target, await self._same_face(image, chosen, target, picked=face_index is not None)))
        embedded = [(chosen_here, *await self._embed(chosen_here.face, route)) for route, chosen_here in faces]
        # The photo is stored before the record exists, so no record is ever without its photo;
        # a photo stored here for a record that then fails to enrol is taken back.
        record_id = record_id_for(subject_id, chosen.image_sha256)
        had_photo = await self.photos.header("gallery", record_id) is not None
        header = PhotoHeader(
            "gallery",
            record_id,
            chosen.image_sha256,
            face_box=box_dict(chosen.face.box),
            subject_id=subject_id,
            origin="enroll",
            eyes=eye_list(chosen.face),
        )
        await self.photos.put(header, image, metadata=metadata)
        try:
            return await self._enroll_embedded(embedded, subject_id, metadata, image_ref, actor)
        except BaseException:
            if not had_photo:
                await self.photos.delete("gallery", record_id)
            raise

    async def _enroll_embedded(
        self,
        embedded: list[tuple[Chosen, common_pb2.Embedding, common_pb2.ModelRef]],
        subject_id: str,
        metadata: Mapping[str, str],
        image_ref: str,
        actor: str,
    ) -> list[Enrolled]:
        enrolled = []
        # The re-embedding's target first: a photo it cannot take is not enrolled at all.
        for chosen_here, embedding, model in reversed(embedded):
            response = await self._bus.request(
                MATCH_ENROLL,
                matcher_pb2.EnrollRequest(
                    subject_id=subject_id,
                    model=model,
                    embedding=embedding,
                    image_sha256=chosen_here.image_sha256,
                    metadata=dict(metadata),
                    image_ref=image_ref,
                    origin=common_pb2.Origin(actor=actor),
                ),
                matcher_pb2.EnrollResponse,
                self._timeout,
            )
            enrolled.append(Enrolled(response, model, chosen_here))
        return enrolled[::-1]

    async def delete_subject(self, principal: Principal, subject_id: str, reason: str) -> int:
        """Expunge a subject from every gallery."""
        try:
            require(principal, Permission.DELETE)
            check_subject_id(subject_id)
            if not reason.strip():
                raise InvalidInput("a reason is required to delete a subject")
            deleted = await self._bus.request(
                MATCH_DELETE,
                matcher_pb2.DeleteSubjectRequest(subject_id=subject_id, origin=common_pb2.Origin(actor=principal.user)),
                matcher_pb2.DeleteSubjectResponse,
                self._timeout,
            )
        except CandorError as error:
            await self.audit_refusal("delete", error, principal.user)
            raise
        photos = await self._delete_photos(
            [h.key for h in await self.photos.headers("gallery") if h.subject_id == subject_id]
        )
        await self._audit.publish(
            "subject.deleted",
            actor=principal.user,
            details={
                "subject_id": subject_id,
                "reason": reason,
                "records": deleted.deleted_records,
                "photos_deleted": photos,
            },
        )
        return int(deleted.deleted_records)

    async def _delete_photos(self, record_ids: Sequence[str]) -> int:
        """Delete the stored photos of expunged records; returns how many there were."""
        return sum([await self.photos.delete("gallery", record_id) for record_id in record_ids])

    async def delete_record(
        self, principal: Principal, record_id: str, reason: str
    ) -> matcher_pb2.DeleteRecordResponse:
        """Expunge one enrolled photo, keeping the subject's other records."""
        try:
            require(principal, Permission.DELETE_RECORD)
            if not reason.strip():
                raise InvalidInput("a reason is required to delete a record")
            deleted = await self._bus.request(
                MATCH_DELETE_RECORD,
                matcher_pb2.DeleteRecordRequest(record_id=record_id, origin=common_pb2.Origin(actor=principal.user)),
                matcher_pb2.DeleteRecordResponse,
                self._timeout,
            )
        except CandorError as error:
            await self.audit_refusal("delete_record", error, principal.user)
            raise
        if not deleted.deleted:
            error = NotFound(f"no gallery holds record {record_id}")
            await self.audit_refusal("delete_record", error, principal.user)
            raise error
        photos = await self._delete_photos([record_id])
        await self._audit.publish(
            "record.deleted",
            actor=principal.user,
            details={
                "record_id": record_id,
                "subject_id": deleted.subject_id,
                "reason": reason,
                "photos_deleted": photos,
            },
        )
        return deleted

    async def record_photo(self, principal: Principal, record_id: str) -> gateway_pb2.Photo:
        """An enrolled record's stored photo, for a gallery admin (to re-embed it); audited."""
        try:
            require(principal, Permission.GET_RECORD_PHOTO)
            photo = await self.photos.get("gallery", record_id)
            if photo is None:
                raise NotFound(f"no photo is stored for record {record_id}")
        except CandorError as error:
            await self.audit_refusal("photo.read", error, principal.user)
            raise
        await self._audit.publish(
            "photo.read",
            actor=principal.user,
            details={"record_id": record_id, "subject_id": photo.header.subject_id, "sha256": photo.header.sha256},
        )
        return photo.message()

    async def list_faces(self, principal: Principal, image: bytes) -> detector_pb2.DetectResponse:
        """The faces of a photo, without chips, so a caller can choose one by index."""
        try:
            require(principal, Permission.DETECT)
            with self._slots.claim():
                return await self.detect(image, include_chips=False, route=await self.routes.for_search())
        except CandorError as error:
            await self.audit_refusal("detect", error, principal.user)
            raise

    async def verify_audit(
        self, principal: Principal, kept: Sequence[audit_pb2.Checkpoint] = ()
    ) -> audit_pb2.VerifyResponse:
        """Ask the audit service to walk the chain, with any checkpoints the caller kept."""
        try:
            require(principal, Permission.VERIFY_AUDIT)
            result = await self._bus.request(
                AUDIT_VERIFY, audit_pb2.VerifyRequest(checkpoints=kept), audit_pb2.VerifyResponse, self._timeout
            )
        except CandorError as error:
            await self.audit_refusal("verify_audit", error, principal.user)
            raise
        await self._audit.publish(
            "audit.verified",
            actor=principal.user,
            details={"ok": result.ok, "records": result.records_checked, "first_bad": result.first_bad_sequence},
        )
        return result

    async def export_case(self, principal: Principal, case_number: str) -> gateway_pb2.ExportCaseResponse:
        """Every audit record naming a case, with the chain's verification; the export is audited."""
        try:
            require(principal, Permission.EXPORT_CASE)
            if not case_number.strip():
                raise InvalidInput("case_number is required")
            # Looser than a search's grammar, so that a case recorded under an older rule can still
            # be exported; but never a text that no search could have carried.
            if len(case_number) > MAX_CASE_CHARS or not is_printable(case_number):
                raise InvalidInput(f"a case number is at most {MAX_CASE_CHARS} printable characters")
            verification = await self._bus.request(
                AUDIT_VERIFY, audit_pb2.VerifyRequest(case_number=case_number), audit_pb2.VerifyResponse, self._timeout
            )
            records = await self._reader.records(on_behalf_of=principal.user, case_number=case_number)
        except CandorError as error:
            await self.audit_refusal("export_case", error, principal.user, case_number=case_number)
            raise
        exported_at = Timestamp()
        exported_at.GetCurrentTime()
        await self._audit.publish(
            "case.exported",
            actor=principal.user,
            case_number=case_number,
            details={"records": len(records), "head_hash": verification.head_hash, "chain_ok": verification.ok},
        )
        return gateway_pb2.ExportCaseResponse(
            case_number=case_number,
            records=records,
            verification=verification,
            exported_at=exported_at,
            exported_by=principal.user,
        )

    async def list_audit_records(
        self, principal: Principal, request: gateway_pb2.ListAuditRecordsRequest
    ) -> gateway_pb2.ListAuditRecordsResponse:
        """One page of the audit records of a period, for oversight reports; the read is audited."""
        try:
            require(principal, Permission.LIST_AUDIT)
            query = audit_pb2.QueryRequest(
                limit=request.limit or PAGE,
                after_sequence=request.after_sequence,
                kinds=list(request.kinds),
                origin=common_pb2.Origin(actor=principal.user),
            )
            if request.HasField("since"):
                query.since.CopyFrom(request.since)
            if request.HasField("until"):
                query.until.CopyFrom(request.until)
            page = await self._bus.request(AUDIT_QUERY, query, audit_pb2.QueryResponse, self._timeout)
        except CandorError as error:
            await self.audit_refusal("list_audit", error, principal.user)
            raise
        await self._audit.publish(
            "audit.listed",
            actor=principal.user,
            details={"after_sequence": request.after_sequence, "records": len(page.records)},
        )
        return gateway_pb2.ListAuditRecordsResponse(records=page.records, more=page.more)


def _model_not_running(route: Route, service: str) -> ServiceUnavailable:
    """What to do when no service of the gallery's model answers: a gallery made with dlib's
    ResNet, say, under services now started on the default SFace."""
    if not route.model_id:
        return ServiceUnavailable(f"no {service} is answering; it may be restarting: try again shortly")
    hint = (
        " (dlib's ResNet runs with CANDOR_DETECTOR_ENGINE=yunet and CANDOR_EMBEDDER_ENGINE=dlib)"
        if route.model_id == DLIB_RESNET_MODEL_ID
        else ""
    )
    return ServiceUnavailable(
        f"no {service} of {route.model_id}, the gallery's model, is answering; it may be restarting: try "
        f"again shortly. If the services now run another model, start {route.model_id}'s detectors and "
        f"embedders{hint}, or move the gallery with `candor gallery reembed --to MODEL`"
    )


def _search_record(
    chosen: Chosen, model: common_pb2.ModelRef, candidates: Sequence[common_pb2.Candidate]
) -> dict[str, Any]:
    """What a search's audit record says of the probe, the model and the candidates shown."""
    quality = chosen.face.quality
    return {
        "probe_sha256": chosen.image_sha256,
        "probe_quality": {"face_size_px": quality.face_size_px, "blur": quality.blur, "turn": round(quality.turn, 3)},
        "face_box": box_dict(chosen.face.box),
        "model": _model(model),
        "threshold": model.threshold,
        "calibration_id": model.calibration_id or None,
        "candidates": [
            {"rank": c.rank, "subject_id": c.subject_id, "distance": round(c.distance, 6), "record_id": c.record_id}
            | ({"calibrated_fmr": c.calibrated_fmr} if c.HasField("calibrated_fmr") else {})
            for c in candidates
        ],
    }


def _model(model: common_pb2.ModelRef) -> dict[str, Any]:
    return {"id": model.id, "version": model.version, "metric": model.metric}

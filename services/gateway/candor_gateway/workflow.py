"""The gateway's orchestration: a search (detect → embed → match under the policy in force), and
the desks behind the rest of the API: the gallery's keeping, the audit log's reads, reviews and
proficiency tests, each with every outcome audited.

Audit is fail-closed: if the event cannot be stored durably, the caller gets UNAVAILABLE and no
result.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from candor.common.v1 import common_pb2
from candor.detector.v1 import detector_pb2
from candor.gateway.v1 import gateway_pb2
from candor.matcher.v1 import matcher_pb2
from candor_gateway.access import Permission, require
from candor_gateway.audit_desk import AuditDesk
from candor_gateway.audit_reader import AuditReader
from candor_gateway.calibration import CalibrationGate
from candor_gateway.gallery_desk import GalleryDesk
from candor_gateway.model_calls import Chosen, ModelCalls, model_details
from candor_gateway.photos import PhotoHeader, PhotoStore, box_dict, eye_list
from candor_gateway.policy import PolicyHolder
from candor_gateway.proficiency import ProficiencySeeder
from candor_gateway.quota import Claim, SearchQuota, SharedCounts
from candor_gateway.refusals import audit_refusal
from candor_gateway.reviews import ReviewDesk
from candor_gateway.routes import ModelRoutes
from candor_gateway.slots import PhotoSlots
from candor_kit import (
    AuditPublisher,
    Bus,
    CandorError,
    ServiceUnavailable,
    subjects,
)
from candor_kit.audit_events import AlreadyRecorded
from candor_kit.errors import NotStored
from candor_kit.policy import Policy
from candor_kit.tokens import Principal

log = structlog.get_logger("candor.gateway")
#: How long a search whose record's publish failed asks the chain whether it is recorded after all.
ASK_THE_CHAIN_S = 3.0
T = TypeVar("T")


@dataclass(frozen=True)
class Matched:
    """A completed search."""

    search_id: str
    candidates: list[common_pb2.Candidate]
    model: common_pb2.ModelRef
    probe_sha256: str
    quality: common_pb2.FaceQuality


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
        hedge_after_s: float = 0.0,
        search_counts: SharedCounts | None = None,
    ) -> None:
        self._bus = bus
        self.routes = ModelRoutes(bus, timeout_s)
        self._calls = ModelCalls(bus, self.routes, timeout_s, max_image_bytes, hedge_after_s)
        self._audit = audit
        #: The (service account, UTC day) pairs already recorded by this gateway.
        self._accounts_seen: set[tuple[str, str]] = set()
        self._policy = policy
        self._calibration = calibration
        self._timeout = timeout_s
        self._slots = PhotoSlots(max_inflight)
        reader = AuditReader(bus, audit, timeout_s)
        self._reader = reader
        self._quota = SearchQuota(reader, search_counts)
        self.photos = photos
        self.gallery = GalleryDesk(bus, audit, reader, photos, self._calls, self._slots, min_face_px, timeout_s)
        self.audits = AuditDesk(bus, audit, reader, timeout_s)
        self.reviews = ReviewDesk(reader, audit, policy, photos, self._calls.locate_face)
        calls = self._calls
        self.proficiency = ProficiencySeeder(
            audit, photos, policy, self.routes.for_search, calls.choose_face, calls.embed, calibration.calibrated
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

    async def note_service_account(self, principal: Principal) -> None:
        """Record a service account's first call of the (UTC) day, with its role: how the oversight
        report tells integrations' calls from people's. One record a day and account however many
        calls and replicas (the chain keeps one record per event id); before the call, so a call
        the chain cannot record is not made."""
        day = time.strftime("%Y-%m-%d", time.gmtime())
        if (principal.user, day) in self._accounts_seen:
            return
        role = ",".join(sorted(principal.roles))
        await self._audit.publish(
            "service_account.used",
            event_id=f"service-account/{principal.user}/{day}",
            actor=principal.user,
            details={"role": role, "day": day},
        )
        self._accounts_seen = {seen for seen in self._accounts_seen if seen[1] == day} | {(principal.user, day)}

    async def audit_session_ended(self, principal: Principal, event_id: str) -> None:
        """Record a sign-out, under its token's one event id: the user's token is revoked from now on."""
        await self._audit.publish(
            "session.ended",
            event_id=event_id,
            actor=principal.user,
            details={"token_expires_at": principal.expires_at or None},
        )

    # --- use cases -----------------------------------------------------------------------------

    async def search(self, principal: Principal, request: gateway_pb2.SearchRequest, search_id: str) -> Matched:
        """Search the gallery for a probe under the policy in force, as ``search_id``; refusals and
        results are both audited. A search id already recorded (a gateway that died before
        answering recorded it, and this is the retry that took its claim over) is answered with the
        candidates its record holds, and recorded once. The search counts against its user's daily
        quota once it is recorded; one that ends otherwise gives its claim back."""
        policy = self._policy.current
        quota = policy.quotas.daily_searches(principal.service_account)
        async with self._quota.claim(principal.user, quota) as claim:
            return await self._search(principal, request, search_id, policy, claim, quota)

    async def _search(
        self,
        principal: Principal,
        request: gateway_pb2.SearchRequest,
        search_id: str,
        policy: Policy,
        claim: Claim,
        quota: int,
    ) -> Matched:
        stages = StageClock()
        case_number, purpose = request.case_number, request.purpose
        authorisation = request.authorisation_reference.strip()
        image = request.probe_image
        try:
            require(principal, Permission.SEARCH)
            limit = policy.check_search(case_number, purpose, authorisation, request.max_candidates)
            with self._slots.claim():
                # The quota is counted while the photo is detected and embedded; nothing is
                # matched before it has answered.
                async with background(self._quota.check(claim, quota)) as quota_check:
                    route = await self.routes.for_search()
                    chosen = await self._calls.choose_face(
                        image, request.face_index if request.HasField("face_index") else None, route
                    )
                    policy.check_probe(chosen.face.quality)
                    stages.mark("detect")
                    # The probe is stored while it is embedded and matched, not on the answer's path.
                    async with self._probe_kept(search_id, image, chosen, policy.retention.keep_probes) as keeping:
                        embedding, model = await self._calls.embed(chosen.face, route)
                        model = policy.threshold(self._calibration.calibrated(model))
                        await self._record_calibration(model)
                        stages.mark("embed")
                        quota_source = await quota_check
                        matched = await self._bus.request(
                            subjects.MATCH_SEARCH,
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
                        retained = await keeping
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
                first=True,
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
        except AlreadyRecorded:  # the run it repeats kept its claim, counted (a dead gateway's, a failed one's)
            candidates, model = await self._recorded_answer(principal, search_id, model)
        except CandorError as failed:
            if await self._maybe_recorded(principal, search_id, failed):
                # On the chain, or perhaps: it counts against the quota (every replica's floor
                # counts it), and its probe stays where its record says it is.
                claim.keep()
            elif retained:
                # Unrecorded, the search did not happen: its probe is not kept either.
                await self.photos.delete("probe", search_id)
            raise
        else:
            claim.keep()
        self._quota.completed(principal.user)
        stages.mark("audit")
        log.info("search_completed", search_id=search_id, candidates=len(candidates), model=model.id, **stages.ms)
        return Matched(search_id, candidates, model, chosen.image_sha256, chosen.face.quality)

    async def _maybe_recorded(self, principal: Principal, search_id: str, failed: CandorError) -> bool:
        """Whether a search whose record's publish failed may be on the chain all the same: one
        that failed UNAVAILABLE may have been stored, its ack lost. The chain is asked (once it
        holds everything on the stream now); when it cannot say either, the search may be recorded:
        its claim on the quota is kept (erring by one search too few, never one too many), and the
        retention sweep deletes its probe if the chain does not hold it within the hour."""
        if not isinstance(failed, ServiceUnavailable) or isinstance(failed, NotStored):
            return False
        try:
            # Briefly: the search is failing already, and its caller waits for the answer.
            found = await asyncio.wait_for(
                self._reader.found(
                    on_behalf_of=principal.user, kind="search.completed", event_id=search_id, everyones=True
                ),
                ASK_THE_CHAIN_S,
            )
        except Exception:  # noqa: BLE001 - whatever stops the question, the answer is unknown
            return True
        return found is not None

    async def _record_calibration(self, model: common_pb2.ModelRef) -> None:
        """Record the calibration a search runs under, with its figures, before the first search
        under it (once a gateway; once on the chain, which keeps an event id once): the oversight
        report shows them even when no operator recorded it (a calibration made where no stack was
        reachable and copied into the registry). Its id is its record's SHA-256, so the figures
        can be checked against the registry's file."""
        calibration = self._calibration.unrecorded(model)
        if calibration is None:
            return
        await self._audit.publish(
            "calibration.in_use",
            event_id=f"calibration/{calibration.calibration_id}",
            actor="system",
            details=calibration.evidence(),
        )
        self._calibration.recorded(calibration.calibration_id)

    async def _recorded_answer(
        self, principal: Principal, search_id: str, searched_with: common_pb2.ModelRef
    ) -> tuple[list[common_pb2.Candidate], common_pb2.ModelRef]:
        """The candidates the search's record holds and the model it names: what was recorded is
        what is answered, even when the gallery has been switched to another model since."""
        details = await self._reader.recorded(on_behalf_of=principal.user, kind="search.completed", event_id=search_id)
        model = _recorded_model(details, searched_with)
        candidates = []
        for shown in details.get("candidates", []):
            candidate = common_pb2.Candidate(
                rank=shown["rank"],
                subject_id=shown["subject_id"],
                distance=shown["distance"],
                record_id=shown["record_id"],
                model_id=model.id,
                model_version=model.version,
            )
            if shown.get("calibrated_fmr") is not None:
                candidate.calibrated_fmr = shown["calibrated_fmr"]
            candidates.append(candidate)
        return candidates, model

    @contextlib.asynccontextmanager
    async def _probe_kept(
        self, search_id: str, image: bytes, chosen: Chosen, keep: bool
    ) -> AsyncIterator[asyncio.Task[bool]]:
        """Store the probe (`_retain`) while the block runs; the block awaits the task. If the block
        fails, a put under way is let finish and the stored probe deleted: no search, no probe."""
        task = asyncio.create_task(self._retain(search_id, image, chosen, keep))
        try:
            yield task
        except BaseException:
            stored = False
            with contextlib.suppress(Exception):
                stored = await asyncio.shield(task)
            if stored:
                await self.photos.delete("probe", search_id)
            raise

    async def _retain(self, search_id: str, image: bytes, chosen: Chosen, keep: bool) -> bool:
        """Keep the probe, encrypted, for its reviewers when the policy says so."""
        if keep:
            header = PhotoHeader(
                "probe", search_id, chosen.image_sha256, face_box=box_dict(chosen.face.box), origin="search",
                eyes=eye_list(chosen.face),
            )  # fmt: skip
            await self.photos.put(header, image)
        return keep

    async def list_faces(self, principal: Principal, image: bytes) -> detector_pb2.DetectResponse:
        """The faces of a photo, without chips, so a caller can choose one by index."""
        try:
            require(principal, Permission.DETECT)
            with self._slots.claim():
                return await self._calls.detect(image, include_chips=False, route=await self.routes.for_search())
        except CandorError as error:
            await self.audit_refusal("detect", error, principal.user)
            raise


def _recorded_model(details: dict[str, Any], searched_with: common_pb2.ModelRef) -> common_pb2.ModelRef:
    """The model a search's record names (`_search_record`); ``searched_with`` when the record names
    none, and for what the record does not keep (the dimension) when it is the same model."""
    named = details.get("model")
    if not named:
        return searched_with
    model = common_pb2.ModelRef(
        id=named["id"],
        version=named["version"],
        metric=named.get("metric", ""),
        threshold=details.get("threshold") or 0.0,
        calibration_id=details.get("calibration_id") or "",
    )
    if (model.id, model.version) == (searched_with.id, searched_with.version):
        model.dimension = searched_with.dimension
    return model


def _search_record(
    chosen: Chosen, model: common_pb2.ModelRef, candidates: Sequence[common_pb2.Candidate]
) -> dict[str, Any]:
    """What a search's audit record says of the probe, the model and the candidates shown."""
    quality = chosen.face.quality
    return {
        "probe_sha256": chosen.image_sha256,
        "probe_quality": {"face_size_px": quality.face_size_px, "blur": quality.blur, "turn": round(quality.turn, 3)},
        "face_box": box_dict(chosen.face.box),
        "model": model_details(model),
        "threshold": model.threshold,
        "calibration_id": model.calibration_id or None,
        "candidates": [
            {"rank": c.rank, "subject_id": c.subject_id, "distance": round(c.distance, 6), "record_id": c.record_id}
            | ({"calibrated_fmr": c.calibrated_fmr} if c.HasField("calibrated_fmr") else {})
            for c in candidates
        ],
    }

"""Proficiency testing: known-answer comparisons a supervisor seeds into reviewers' queues.

A seeded test is a probe and one candidate from the agency's own labelled pairs, with the answer
(same person or not). It is recorded in the chain as ``proficiency.seeded`` (actor: the supervisor
who seeded it), with the case number, purpose, searcher and subject id it is shown under, and the
model's real distance between the two faces, so in a reviewer's queue and on the desk it looks
like any search. Its photos are kept like a retained probe (the candidate's as ``exemplar/<search
id>``), reviewed through the same calls, and its outcome is recorded as ``proficiency.scored``:
never ``review.confirmed``, so it is never a lead, never in the report's review outcomes, never in
a discovery export's leads. The oversight report scores each reviewer's conclusions on them.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from candor.common.v1 import common_pb2
from candor.gateway.v1 import gateway_pb2
from candor_gateway.access import Permission, require
from candor_gateway.photos import PhotoHeader, PhotoStore, box_dict, eye_list
from candor_gateway.policy import PolicyHolder
from candor_gateway.refusals import audit_refusal
from candor_gateway.routes import Route
from candor_kit import AuditPublisher, CandorError, InvalidInput
from candor_kit.identifiers import check_metadata
from candor_kit.policy import MAX_CASE_CHARS, is_printable
from candor_kit.tokens import Principal

SEEDED = "proficiency.seeded"
SCORED = "proficiency.scored"
#: The longest shown name, subject id or source.
MAX_FIELD_CHARS = 128


class ProficiencySeeder:
    """Seeds known-answer comparisons; the faces found, embedded and compared by the active model."""

    def __init__(
        self,
        audit: AuditPublisher,
        photos: PhotoStore,
        policy: PolicyHolder,
        route: Callable[[], Awaitable[Route]],
        choose_face: Callable[[bytes, int | None, Route], Awaitable[Any]],
        embed: Callable[[common_pb2.DetectedFace, Route], Awaitable[tuple[common_pb2.Embedding, common_pb2.ModelRef]]],
        calibrated: Callable[[common_pb2.ModelRef], common_pb2.ModelRef],
    ) -> None:
        self._audit = audit
        self._photos = photos
        self._policy = policy
        self._route = route
        self._choose_face = choose_face
        self._embed = embed
        self._calibrated = calibrated

    async def seed(
        self, principal: Principal, request: gateway_pb2.SeedProficiencyTestRequest, search_id: str
    ) -> gateway_pb2.SeedProficiencyTestResponse:
        """Seed one test as search ``search_id`` (work redone under the same id after a gateway died
        is recorded once: the audit stream keeps an event id once); refused (and audited) when a
        field is missing or a photo has not one face."""
        policy = self._policy.current
        try:
            require(principal, Permission.SEED_PROFICIENCY)
            policy.check_search(request.case_number, request.purpose, "seeded", 1)
            for name, value in (
                ("shown_searcher", request.shown_searcher),
                ("shown_subject_id", request.shown_subject_id),
                ("source", request.source),
            ):
                if not value.strip() or len(value) > MAX_FIELD_CHARS or not is_printable(value):
                    raise InvalidInput(f"{name} is 1 to {MAX_FIELD_CHARS} printable characters")
            check_metadata(request.shown_metadata)
            if request.shown_searcher == principal.user:
                raise InvalidInput("the searcher shown must be someone other than you, as in real work")
            route = await self._route()
            probe = await self._choose_face(request.probe_image, None, route)
            candidate = await self._choose_face(request.candidate_image, None, route)
            probe_vector, model = await self._embed(probe.face, route)
            candidate_vector, _ = await self._embed(candidate.face, route)
        except CandorError as error:
            await audit_refusal(
                self._audit, "proficiency.seed", error, principal.user,
                case_number=request.case_number[:MAX_CASE_CHARS], purpose=request.purpose,
            )  # fmt: skip
            raise
        model = policy.threshold(self._calibrated(model))
        distance = _distance(probe_vector, candidate_vector, model.metric)
        await self._photos.put(
            PhotoHeader("probe", search_id, probe.image_sha256, face_box=box_dict(probe.face.box), origin="search",
                        eyes=eye_list(probe.face)),
            request.probe_image,
        )  # fmt: skip
        await self._photos.put(
            PhotoHeader("exemplar", search_id, candidate.image_sha256, face_box=box_dict(candidate.face.box),
                        subject_id=request.shown_subject_id, origin="enroll", eyes=eye_list(candidate.face)),
            request.candidate_image,
            metadata=dict(request.shown_metadata),
        )  # fmt: skip
        quality = probe.face.quality
        await self._audit.publish(
            SEEDED,
            event_id=search_id,
            actor=principal.user,
            case_number=request.case_number,
            purpose=request.purpose,
            details={
                "answer": "same" if request.same_person else "different",
                "source": request.source,
                "shown_searcher": request.shown_searcher,
                "probe_sha256": probe.image_sha256,
                "candidate_sha256": candidate.image_sha256,
                "probe_quality": {
                    "face_size_px": quality.face_size_px,
                    "blur": quality.blur,
                    "turn": round(quality.turn, 3),
                },
                "model": {"id": model.id, "version": model.version, "metric": model.metric},
                "threshold": model.threshold,
                "calibration_id": model.calibration_id or None,
                "candidates": [
                    {
                        "rank": 1,
                        "subject_id": request.shown_subject_id,
                        "distance": round(distance, 6),
                        "record_id": str(uuid.uuid4()),
                    }
                ],
                "probe_retained": True,
                "reviews_needed": policy.reviews.needed,
            },
        )
        return gateway_pb2.SeedProficiencyTestResponse(search_id=search_id, distance=distance)


def _distance(a: common_pb2.Embedding, b: common_pb2.Embedding, metric: str) -> float:
    """The model's distance between two vectors: cosine distance, or Euclidean."""
    x, y = np.asarray(a.values, dtype=np.float64), np.asarray(b.values, dtype=np.float64)
    if metric == "cosine":
        return float(1.0 - x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
    return float(np.linalg.norm(x - y))

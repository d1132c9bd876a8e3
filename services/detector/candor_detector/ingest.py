"""The detector's import worker: one face per photo, checked against the import's rules."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from candor.detector.v1 import detector_pb2
from candor.ingest.v1 import ingest_pb2
from candor_kit import Bus, InvalidInput, TooLarge
from candor_kit.boxes import same_face
from candor_kit.ingest import Stage, hand_on, publish_result, rejection

Detect = Callable[[detector_pb2.DetectRequest], Awaitable[detector_pb2.DetectResponse]]


class DetectStage:
    """Finds the face of an import's photo and hands it to the embedder of the model its chips are
    cut for, or records why not."""

    def __init__(self, bus: Bus, detect: Detect, model_id: str) -> None:
        self._bus = bus
        self._detect = detect
        self._next = Stage("embed", model_id)

    async def __call__(self, work: ingest_pb2.DetectWork) -> None:
        """Settle one photo: rejected here, or queued for embedding."""
        reason, detail = ingest_pb2.REJECT_REASON_UNSPECIFIED, ""
        decoded = False
        try:
            detected = await self._detect(detector_pb2.DetectRequest(image=work.image, include_chips=True))
        except TooLarge as exc:
            reason, detail = ingest_pb2.REJECT_REASON_TOO_LARGE, exc.message
        except InvalidInput as exc:
            reason, detail = ingest_pb2.REJECT_REASON_UNREADABLE, exc.message
        else:
            decoded = True
            faces, rules = list(detected.faces), work.rules
            if len(faces) > 1 and work.item.HasField("face_box"):
                # A record enrolled from one face of a group photo: that face, found by this model.
                index = same_face(faces, work.item.face_box)
                faces = faces if index is None else [faces[index]]
            if not faces:
                reason, detail = ingest_pb2.REJECT_REASON_NO_FACE, "no face was found"
            elif len(faces) > 1:
                reason, detail = ingest_pb2.REJECT_REASON_SEVERAL_FACES, f"{len(faces)} faces were found"
                if work.item.HasField("face_box"):
                    detail += ", none of them where the record's face is"
            elif faces[0].quality.face_size_px < rules.min_face_px:
                reason = ingest_pb2.REJECT_REASON_TOO_SMALL
                detail = f"the face is {faces[0].quality.face_size_px} px wide; enrolment needs {rules.min_face_px}"
            elif faces[0].quality.blur < rules.min_blur:
                reason = ingest_pb2.REJECT_REASON_BLURRY
                detail = f"sharpness {faces[0].quality.blur:.1f} is under the {rules.min_blur:g} enrolment needs"
        if reason != ingest_pb2.REJECT_REASON_UNSPECIFIED:
            result = rejection(work.item, reason, detail, "detector")
            # The detector hashed the photo unless it could not decode it.
            result.image_sha256 = detected.image_sha256 if decoded else hashlib.sha256(work.image).hexdigest()
            await publish_result(self._bus, result, "detect")
            return
        face = faces[0]
        await hand_on(
            self._bus,
            self._next,
            ingest_pb2.EmbedWork(
                item=work.item, image_sha256=detected.image_sha256, chip=face.chip, quality=face.quality
            ),
        )

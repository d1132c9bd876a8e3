"""The gateway's calls to the face models: a photo's faces from a detector, a face's vector from an
embedder, each of the model a route names (the gallery's active model, or its re-embedding target).

Search, enrolment, proficiency seeding and the review desk's face location all go through here, so
each refuses the same way: an image too large or empty, no face or several, a model not running.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from candor.common.v1 import common_pb2
from candor.detector.v1 import detector_pb2
from candor.embedder.v1 import embedder_pb2
from candor_gateway.routes import ModelRoutes, Route
from candor_kit import Bus, InvalidInput, ServiceUnavailable, TooLarge
from candor_kit.boxes import same_face
from candor_kit.errors import NoAnswer
from candor_kit.model_files import DLIB_RESNET_MODEL_ID


@dataclass(frozen=True)
class Chosen:
    """The face picked from a photo, with the photo's hash."""

    face: common_pb2.DetectedFace
    image_sha256: str


class ModelCalls:
    """Detection and embedding over the bus, by model route.

    Both change nothing, so a call unanswered after ``hedge_after_s`` is asked again and the first
    answer taken (a replica killed or paused with the request in hand would otherwise hold the
    search for the whole ``timeout_s``); 0 never asks again.
    """

    def __init__(
        self, bus: Bus, routes: ModelRoutes, timeout_s: float, max_image_bytes: int, hedge_after_s: float = 0.0
    ) -> None:
        self._bus = bus
        self.routes = routes
        self._timeout = timeout_s
        self._max_image_bytes = max_image_bytes
        self._hedge_after = hedge_after_s

    async def detect(self, image: bytes, include_chips: bool, route: Route) -> detector_pb2.DetectResponse:
        """All faces of a photo, found by the detector of the route's model."""
        if not image:
            raise InvalidInput("the image is empty")
        if len(image) > self._max_image_bytes:
            raise TooLarge(f"the image is {len(image)} bytes; the limit is {self._max_image_bytes}")
        request = detector_pb2.DetectRequest(image=image, include_chips=include_chips)
        try:
            return await self._bus.request(
                route.detect, request, detector_pb2.DetectResponse, self._timeout, self._hedge_after
            )
        except NoAnswer:
            raise
        except ServiceUnavailable as error:
            raise model_not_running(route, "detector") from error

    async def locate_face(self, image: bytes, box: common_pb2.Box | None = None) -> common_pb2.DetectedFace | None:
        """A stored photo's face, found by the active model's detector: the one overlapping
        ``box`` when given, else its only face; None when there is no such face."""
        detected = await self.detect(image, include_chips=False, route=await self.routes.for_search())
        if box is not None:
            index = same_face(detected.faces, box)
            return detected.faces[index] if index is not None else None
        return detected.faces[0] if len(detected.faces) == 1 else None

    async def choose_face(self, image: bytes, face_index: int | None, route: Route) -> Chosen:
        """The face of a photo the caller chose (by index), or its only face; refused otherwise."""
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

    async def same_face(self, image: bytes, chosen: Chosen, route: Route, picked: bool) -> Chosen:
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

    async def embed(
        self, face: common_pb2.DetectedFace, route: Route
    ) -> tuple[common_pb2.Embedding, common_pb2.ModelRef]:
        """The face's vector from an embedder of the route's model, with the model that made it."""
        try:
            reply = await self._bus.request(
                route.embed,
                embedder_pb2.EmbedRequest(chips=[face.chip]),
                embedder_pb2.EmbedResponse,
                self._timeout,
                self._hedge_after,
            )
        except NoAnswer:
            raise
        except ServiceUnavailable as error:
            raise model_not_running(route, "embedder") from error
        if route.model_id and reply.model.id != route.model_id:
            raise ServiceUnavailable(f"an embedder of {reply.model.id} answered for {route.model_id}")
        return reply.embeddings[0], reply.model


def model_not_running(route: Route, service: str) -> ServiceUnavailable:
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


def model_details(model: common_pb2.ModelRef) -> dict[str, Any]:
    return {"id": model.id, "version": model.version, "metric": model.metric}

"""Which detectors and embedders a photo goes to: those of the gallery's active model.

Detectors and embedders answer on their model's own subjects (``…detect.<model id>``,
``…embed.<model id>``) as well as on the plain ones. While the gallery has no model record yet (a
new deployment, before its first enrolment) the gateway uses the plain subjects, which one model
serves. Once the gallery has a model, searches go to that model's services, and while the gallery
is re-embedded into another model, enrolments go to both.
"""

from __future__ import annotations

from dataclasses import dataclass

from candor.common.v1 import common_pb2
from candor.embedder.v1 import embedder_pb2
from candor.matcher.v1 import matcher_pb2
from candor_kit import Bus, InvalidInput, PreconditionFailed, subjects
from candor_kit.gallery_models import GalleryModelsReader, has


@dataclass(frozen=True)
class Route:
    """The subjects that detect and embed for one model ("" model: the deployment's only one)."""

    model_id: str
    detect: str
    embed: str

    @classmethod
    def of(cls, model_id: str) -> Route:
        """The route to one model's detectors and embedders."""
        return cls(model_id, subjects.detect_for(model_id), subjects.embed_for(model_id))


#: The plain subjects, for a gallery that has no model yet.
PLAIN = Route("", subjects.DETECT, subjects.EMBED)


class ModelRoutes:
    """Routes photos by the gallery's model record: a search by the copy a watch keeps in memory,
    an enrolment by a fresh key-value read, so a switch takes effect with the next request."""

    def __init__(self, bus: Bus, timeout_s: float) -> None:
        self._bus = bus
        self._timeout = timeout_s
        self._reader = GalleryModelsReader(bus)

    async def close(self) -> None:
        """Stop following the model record (at the gateway's stop)."""
        await self._reader.close()

    async def models(self) -> matcher_pb2.GalleryModels:
        """The gallery's active model and any re-embedding under way."""
        return await self._reader.read()

    async def for_search(self) -> Route:
        """Where a probe goes: by the record as a watch keeps it in memory (a switch reaches it
        within the watch's delivery; the matcher refuses a search with the old model meanwhile)."""
        models = await self._reader.for_search()
        return Route.of(models.active.id) if has(models.active) else PLAIN

    async def for_enrolment(self) -> tuple[Route, Route | None]:
        """Where a photo to enrol goes: the active model, and the target while re-embedding."""
        models = await self.models()
        if not has(models.active):
            return PLAIN, None
        return Route.of(models.active.id), (Route.of(models.target.id) if has(models.target) else None)

    async def model(self, model_id: str = "") -> common_pb2.ModelRef:
        """What a running embedder of ``model_id`` (the deployment's only model when empty) says of
        its model; UNAVAILABLE when none is running."""
        subject = subjects.embed_model_for(model_id) if model_id else subjects.EMBED_MODEL
        return await self._bus.request(subject, embedder_pb2.GetModelRequest(), common_pb2.ModelRef, self._timeout)

    async def import_model(self, requested: str) -> str:
        """The model an import enrols with: the one asked for, which must be the active model or the
        one being re-embedded into, or else the active model."""
        models = await self.models()
        if not has(models.active):
            model_id = requested or (await self.model()).id
        elif not requested:
            model_id = models.active.id
        elif requested in (models.active.id, models.target.id):
            model_id = requested
        else:
            raise PreconditionFailed(
                f"the gallery's model is {models.active.id}; an import with {requested} needs a re-embedding into it"
            )
        if not subjects.LANE.match(model_id):
            raise InvalidInput(f"model id {model_id!r} cannot route work: use 1 to 64 of A-Z, a-z, 0-9, _ and -")
        return model_id

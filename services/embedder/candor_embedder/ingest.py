"""The embedder's import worker: each photo's face becomes a vector for the matcher."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from candor.embedder.v1 import embedder_pb2
from candor.ingest.v1 import ingest_pb2
from candor_kit import Bus, InvalidInput
from candor_kit.ingest import MATCH, hand_on

Embed = Callable[[embedder_pb2.EmbedRequest], Awaitable[embedder_pb2.EmbedResponse]]


class EmbedStage:
    """Embeds an import's face and queues the vector for enrolment."""

    def __init__(self, bus: Bus, embed: Embed) -> None:
        self._bus = bus
        self._embed = embed

    async def __call__(self, work: ingest_pb2.EmbedWork) -> None:
        """Embed one face (the batcher joins the faces of concurrent items) and hand it on."""
        reply = await self._embed(embedder_pb2.EmbedRequest(chips=[work.chip]))
        if work.item.model_id and reply.model.id != work.item.model_id:
            raise InvalidInput(f"the photo is for model {work.item.model_id}; this embedder runs {reply.model.id}")
        await hand_on(
            self._bus,
            MATCH,
            ingest_pb2.MatchWork(
                item=work.item, image_sha256=work.image_sha256, model=reply.model, embedding=reply.embeddings[0]
            ),
        )

"""The embedder service: gRPC and NATS adapters around an embedding engine."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import grpc
import numpy as np
import structlog

from candor.common.v1 import common_pb2
from candor.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from candor_embedder.batching import EmbeddingBatcher
from candor_embedder.ingest import EmbedStage
from candor_faces.embedding import build_engine
from candor_faces.engines import EmbeddingEngine, ModelInfo
from candor_kit import CommonSettings, EnvReader, InvalidInput, ServiceHost, catalogue, rpc, subjects
from candor_kit.ingest import Stage, WorkerSettings, running_worker

EMBED_SUBJECT = subjects.EMBED
MODEL_SUBJECT = subjects.EMBED_MODEL
log = structlog.get_logger("candor.embedder")


@dataclass(frozen=True)
class EmbedderSettings:
    """Embedder configuration, from the environment."""

    common: CommonSettings
    engine: str
    model_dir: str | None
    threshold: float | None
    max_batch: int
    model_pack: str | None = None
    model_files_dir: str | None = None
    providers: str = "cpu"
    accepted_licences: tuple[str, ...] = ()
    worker: WorkerSettings = field(default_factory=WorkerSettings)

    @classmethod
    def from_env(cls, env: EnvReader | None = None) -> EmbedderSettings:
        """Read the embedder settings (catalogue.SERVICES["embedder"]); raises ConfigError naming every bad value."""
        env = env or EnvReader()
        settings = cls(
            common=CommonSettings.read("embedder", env),
            engine=env.get(catalogue.EMBEDDER_ENGINE),
            model_dir=env.get(catalogue.DLIB_MODEL_DIR) or None,
            threshold=env.get(catalogue.EMBEDDER_THRESHOLD) or None,
            max_batch=env.get(catalogue.EMBEDDER_MAX_BATCH),
            model_pack=env.get(catalogue.MODEL_PACK) or None,
            model_files_dir=env.get(catalogue.MODEL_FILES_DIR) or None,
            providers=env.get(catalogue.ONNX_PROVIDERS),
            accepted_licences=tuple(env.get(catalogue.ACCEPT_MODEL_LICENCES)),
            worker=WorkerSettings.read(env),
        )
        env.done()
        return settings


def model_proto(model: ModelInfo) -> common_pb2.ModelRef:
    """The wire form of a ModelInfo."""
    return common_pb2.ModelRef(
        id=model.id,
        version=model.version,
        metric=model.metric,
        dimension=model.dimension,
        threshold=model.threshold,
    )


class EmbeddingService:
    """Validates chips and embeds them through the batcher."""

    def __init__(self, engine: EmbeddingEngine, batcher: EmbeddingBatcher) -> None:
        self._model = engine.model
        self._batcher = batcher

    async def embed(self, request: embedder_pb2.EmbedRequest) -> embedder_pb2.EmbedResponse:
        """One embedding per chip, with the model that made them."""
        size = self._model.chip_size
        chips = []
        for index, chip in enumerate(request.chips):
            if chip.width != size or chip.height != size or len(chip.rgb) != size * size * 3:
                raise InvalidInput(f"chip {index} must be {size}x{size} RGB for model {self._model.id}")
            chips.append(np.frombuffer(chip.rgb, dtype=np.uint8).reshape(size, size, 3))
        start = time.perf_counter()
        vectors = await self._batcher.embed(chips)
        elapsed_ms = round((time.perf_counter() - start) * 1000, 2)
        log.info("faces_embedded", count=len(chips), model=self._model.id, compute_ms=elapsed_ms)
        return embedder_pb2.EmbedResponse(
            embeddings=[common_pb2.Embedding(values=row.tolist()) for row in vectors],
            model=model_proto(self._model),
        )

    async def model(self, _: embedder_pb2.GetModelRequest) -> common_pb2.ModelRef:
        """The loaded model."""
        return model_proto(self._model)


class EmbedderServicer(embedder_pb2_grpc.EmbedderServiceServicer):
    """gRPC adapter."""

    def __init__(self, service: EmbeddingService) -> None:
        self._service = service

    @rpc("candor.embedder.v1.EmbedderService")
    async def Embed(  # noqa: N802 - gRPC method name
        self, request: embedder_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embedder_pb2.EmbedResponse:
        return await self._service.embed(request)

    @rpc("candor.embedder.v1.EmbedderService")
    async def GetModel(  # noqa: N802 - gRPC method name
        self, request: embedder_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.ModelRef:
        return await self._service.model(request)


async def serve(settings: EmbedderSettings, stop: asyncio.Event) -> None:
    """Run the embedder until ``stop`` is set."""
    engine = build_engine(
        settings.engine,
        settings.model_dir,
        settings.threshold,
        settings.model_pack,
        settings.providers,
        settings.accepted_licences,
        model_files_dir=settings.model_files_dir,
    )
    batcher = EmbeddingBatcher(engine, settings.max_batch)
    service = EmbeddingService(engine, batcher)
    batcher.start()
    try:
        async with ServiceHost(settings.common, ["candor.embedder.v1.EmbedderService"]) as host:
            embedder_pb2_grpc.add_EmbedderServiceServicer_to_server(EmbedderServicer(service), host.grpc.server)
            await host.start_grpc()
            # Warm-up: the first dlib call allocates its buffers.
            size = engine.model.chip_size
            await batcher.embed([np.zeros((size, size, 3), dtype=np.uint8)])
            assert host.bus is not None
            model_id = engine.model.id
            # The plain subjects serve a deployment with one model; the model's own subjects and
            # work lane let a second model's embedders run beside it (re-embedding a gallery).
            for subject in (EMBED_SUBJECT, subjects.embed_for(model_id)):
                await host.bus.serve(subject, "embedder", embedder_pb2.EmbedRequest, service.embed)
            for subject in (MODEL_SUBJECT, subjects.embed_model_for(model_id)):
                await host.bus.serve(subject, "embedder", embedder_pb2.GetModelRequest, service.model)
            stage = EmbedStage(host.bus, service.embed)
            worker = running_worker(host.bus, Stage("embed", model_id), stage, settings.worker, stop)
            await host.mark_serving()
            await stop.wait()
            if worker is not None:
                await worker
    finally:
        await batcher.close()

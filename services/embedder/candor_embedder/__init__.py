"""Candor's embedder service: face embeddings from a pluggable model engine, batched."""

from candor_embedder.batching import EmbeddingBatcher
from candor_embedder.engines import DlibOnnxEngine, DlibResNetEngine, EmbeddingEngine, ModelInfo, build_engine
from candor_embedder.service import EMBED_SUBJECT, MODEL_SUBJECT, EmbedderSettings, serve

__all__ = [
    "EMBED_SUBJECT",
    "MODEL_SUBJECT",
    "DlibOnnxEngine",
    "DlibResNetEngine",
    "EmbedderSettings",
    "EmbeddingBatcher",
    "EmbeddingEngine",
    "ModelInfo",
    "build_engine",
    "serve",
]

"""Candor's embedder service: the face pipeline's embedding engines (candor_faces), batched, behind
NATS and gRPC."""

from candor_embedder.batching import EmbeddingBatcher
from candor_embedder.service import EMBED_SUBJECT, MODEL_SUBJECT, EmbedderSettings, serve

__all__ = ["EMBED_SUBJECT", "MODEL_SUBJECT", "EmbedderSettings", "EmbeddingBatcher", "serve"]

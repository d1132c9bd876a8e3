"""Candor's matcher service: the gallery in Qdrant, one collection per model."""

from candor_matcher.edge_backend import EdgeBackend
from candor_matcher.gallery import Gallery, GalleryIndex, GalleryModel, Hit, record_id_for
from candor_matcher.server_backend import QdrantServerBackend
from candor_matcher.service import MatcherSettings, serve

__all__ = [
    "EdgeBackend",
    "Gallery",
    "GalleryIndex",
    "GalleryModel",
    "Hit",
    "MatcherSettings",
    "QdrantServerBackend",
    "record_id_for",
    "serve",
]

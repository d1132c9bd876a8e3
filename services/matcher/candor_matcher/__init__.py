"""Candor's matcher service: the gallery in Qdrant, one collection per model."""

from candor_matcher.gallery import Gallery, GalleryIndex, GalleryModel, Hit, record_id_for
from candor_matcher.service import MatcherSettings, serve

__all__ = ["Gallery", "GalleryIndex", "GalleryModel", "Hit", "MatcherSettings", "record_id_for", "serve"]

"""The Qdrant Edge gallery: idempotent enrolment, search, deletion, restart, model checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from candor_kit import PreconditionFailed
from candor_matcher import Gallery, GalleryModel

DLIB = GalleryModel(id="dlib-resnet-v1", version="1.0", metric="euclidean", dimension=128)


def vec(seed: int, scale: float = 0.1) -> list[float]:
    return (np.random.default_rng(seed).normal(size=128) * scale).astype(np.float32).tolist()


def test_enrol_is_idempotent_and_search_ranks_by_distance(tmp_path: Path) -> None:
    index = Gallery(tmp_path).index_for(DLIB)
    record, created = index.enroll("A1", "a" * 64, vec(1), {"source": "booking"})
    assert created
    assert index.enroll("A1", "a" * 64, vec(1), {}) == (record, False)
    index.enroll("B2", "b" * 64, vec(2), {})
    probe = (np.array(vec(1)) + 0.01).tolist()
    hits = index.search(probe, limit=5, max_distance=10.0)
    assert [h.subject_id for h in hits] == ["A1", "B2"]
    assert hits[0].distance < hits[1].distance
    assert index.search(probe, limit=5, max_distance=hits[0].distance + 1e-3)[0].subject_id == "A1"
    assert len(index.search(probe, limit=5, max_distance=hits[0].distance + 1e-3)) == 1


def test_one_candidate_per_subject(tmp_path: Path) -> None:
    index = Gallery(tmp_path).index_for(DLIB)
    index.enroll("A1", "a" * 64, vec(1), {})
    index.enroll("A1", "c" * 64, (np.array(vec(1)) + 0.02).tolist(), {})
    index.enroll("B2", "b" * 64, vec(2), {})
    hits = index.search(vec(1), limit=5, max_distance=10.0)
    assert [h.subject_id for h in hits] == ["A1", "B2"]


def test_gallery_survives_a_restart_and_deletion_reaches_the_store(tmp_path: Path) -> None:
    gallery = Gallery(tmp_path)
    gallery.index_for(DLIB).enroll("A1", "a" * 64, vec(1), {})
    gallery.index_for(DLIB).enroll("B2", "b" * 64, vec(2), {})
    gallery.close()
    reopened = Gallery(tmp_path)
    assert reopened.index_for(DLIB).count() == 2
    assert reopened.index_for(DLIB).delete_subject("A1") == 1
    reopened.close()
    final = Gallery(tmp_path).index_for(DLIB)
    assert final.count() == 1
    assert [h.subject_id for h in final.search(vec(1), 5, 10.0)] == ["B2"]


def test_vectors_of_another_model_version_are_refused(tmp_path: Path) -> None:
    gallery = Gallery(tmp_path)
    gallery.index_for(DLIB)
    with pytest.raises(PreconditionFailed, match=r"refusing version 2\.0"):
        gallery.index_for(GalleryModel(id=DLIB.id, version="2.0", metric="euclidean", dimension=128))

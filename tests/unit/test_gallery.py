"""The gallery on both backends: idempotent enrolment, search, deletion, restart, model checks.

The server backend runs against qdrant-client's local mode, a STAND-IN for a Qdrant server
(none can be installed here): same client API and results, brute-force search, no payload
indexes, no shards or replicas.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from candor_kit import PreconditionFailed
from candor_kit.identifiers import record_id_for
from candor_matcher import EdgeBackend, Gallery, GalleryModel, QdrantServerBackend
from candor_matcher.gallery import Enrolment

DLIB = GalleryModel(id="dlib-resnet-v1", version="1.0", metric="euclidean", dimension=128)
ARC = GalleryModel(id="arcface-r100", version="1.0", metric="cosine", dimension=512)

BackendFactory = Callable[[], object]


@pytest.fixture(params=["edge", "server-stand-in"])
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendFactory]:
    """Opens the backend on the same storage each call, as a restarted matcher would."""
    clients: list[QdrantClient] = []

    def factory() -> object:
        if request.param == "edge":
            return EdgeBackend(tmp_path / "gallery")
        for client in clients:  # local mode locks its folder: close the previous "server" first
            client.close()
        clients.append(QdrantClient(path=str(tmp_path / "qdrant-stand-in")))
        return QdrantServerBackend(clients[-1])

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
        yield factory
    for client in clients:
        client.close()


def vec(seed: int, scale: float = 0.1, size: int = 128) -> list[float]:
    return (np.random.default_rng(seed).normal(size=size) * scale).astype(np.float32).tolist()


def test_enrol_is_idempotent_and_search_ranks_by_distance(open_backend: BackendFactory) -> None:
    index = Gallery(open_backend()).index_for(DLIB)  # type: ignore[arg-type]
    record, created = index.enroll("A1", "a" * 64, vec(1), {"source": "booking"})
    assert created
    assert index.enroll("A1", "a" * 64, vec(1), {}) == (record, False)
    index.enroll("B2", "b" * 64, vec(2), {})
    probe = (np.array(vec(1)) + 0.01).tolist()
    hits = index.search(probe, limit=5, max_distance=10.0)
    assert [h.subject_id for h in hits] == ["A1", "B2"]
    assert hits[0].distance < hits[1].distance
    tight = index.search(probe, limit=5, max_distance=hits[0].distance + 1e-3)
    assert [h.subject_id for h in tight] == ["A1"]


def test_one_candidate_per_subject(open_backend: BackendFactory) -> None:
    index = Gallery(open_backend()).index_for(DLIB)  # type: ignore[arg-type]
    index.enroll("A1", "a" * 64, vec(1), {})
    index.enroll("A1", "c" * 64, (np.array(vec(1)) + 0.02).tolist(), {})
    index.enroll("B2", "b" * 64, vec(2), {})
    assert index.count("A1") == 2
    assert [h.subject_id for h in index.search(vec(1), limit=5, max_distance=10.0)] == ["A1", "B2"]


def test_a_subject_with_many_photos_does_not_crowd_out_the_next_subject(open_backend: BackendFactory) -> None:
    index = Gallery(open_backend()).index_for(DLIB)  # type: ignore[arg-type]
    base = np.array(vec(1))
    for n in range(12):  # twelve photos of A, all nearer the probe than B's one photo
        index.enroll("A1", f"{n:064x}", (base + 0.001 * (n + 1)).tolist(), {})
    index.enroll("B2", "b" * 64, (base + 0.5).tolist(), {})
    hits = index.search(base.tolist(), limit=2, max_distance=100.0)
    assert [h.subject_id for h in hits] == ["A1", "B2"]


def test_cosine_models_report_distance_as_one_minus_similarity(open_backend: BackendFactory) -> None:
    index = Gallery(open_backend()).index_for(ARC)  # type: ignore[arg-type]
    index.enroll("A1", "a" * 64, vec(1, size=512), {})
    hit = index.search(vec(1, size=512), limit=1, max_distance=0.5)[0]
    assert hit.subject_id == "A1" and hit.distance == pytest.approx(0.0, abs=1e-5)


def test_gallery_survives_a_restart_and_deletion_reaches_the_store(open_backend: BackendFactory) -> None:
    gallery = Gallery(open_backend())  # type: ignore[arg-type]
    gallery.index_for(DLIB).enroll("A1", "a" * 64, vec(1), {})
    gallery.index_for(DLIB).enroll("B2", "b" * 64, vec(2), {})
    gallery.close()
    reopened = Gallery(open_backend())  # type: ignore[arg-type]
    assert reopened.index_for(DLIB).count() == 2
    # The ids of what went, for the gateway to delete their photos by name.
    assert reopened.index_for(DLIB).delete_subject("A1") == [record_id_for("A1", "a" * 64)]
    assert reopened.index_for(DLIB).delete_subject("A1") == []
    reopened.close()
    final = Gallery(open_backend()).index_for(DLIB)  # type: ignore[arg-type]
    assert final.count() == 1
    assert [h.subject_id for h in final.search(vec(1), 5, 10.0)] == ["B2"]


def test_single_image_delete_keeps_the_subjects_other_images(open_backend: BackendFactory) -> None:
    index = Gallery(open_backend()).index_for(DLIB)  # type: ignore[arg-type]
    first, _ = index.enroll("A1", "a" * 64, vec(1), {})
    index.enroll("A1", "c" * 64, vec(3), {})
    assert index.delete_record(first) == "A1"
    assert index.delete_record(first) is None
    assert index.count("A1") == 1
    assert all(h.record_id != first for h in index.search(vec(1), 5, 10.0))


def test_vectors_of_another_model_version_are_refused(open_backend: BackendFactory) -> None:
    gallery = Gallery(open_backend())  # type: ignore[arg-type]
    gallery.index_for(DLIB)
    with pytest.raises(PreconditionFailed, match=r"refusing version 2\.0"):
        gallery.index_for(GalleryModel(id=DLIB.id, version="2.0", metric="euclidean", dimension=128))


def test_a_redelivered_import_item_counts_as_enrolled_and_a_second_import_as_a_duplicate(
    open_backend: BackendFactory,
) -> None:
    index = Gallery(open_backend()).index_for(DLIB)  # type: ignore[arg-type]
    record, created = index.enroll("A1", "a" * 64, vec(1), {}, origin="imp-one/7", image_ref="A1/a.jpg")
    assert created
    # The same item delivered again (its worker died before acking): still this import's enrolment.
    assert index.enroll("A1", "a" * 64, vec(1), {}, origin="imp-one/7") == (record, True)
    # Another import, or the one-by-one API, finds it already there.
    assert index.enroll("A1", "a" * 64, vec(1), {}, origin="imp-two/0") == (record, False)
    assert index.enroll("A1", "a" * 64, vec(1), {}) == (record, False)
    assert index.count() == 1


def test_the_records_another_model_lacks_are_listed_in_pages_with_their_references(
    open_backend: BackendFactory,
) -> None:
    gallery = Gallery(open_backend())  # type: ignore[arg-type]
    old, new = gallery.index_for(DLIB), gallery.index_for(ARC)
    for n in range(23):
        old.enroll(
            f"S{n}", f"{n:064x}", vec(n), {"booking": f"B{n}"}, origin=f"imp-first/{n}", image_ref=f"S{n}/{n}.jpg"
        )
    carried = {n for n in range(23) if n % 3 == 0}
    for n in carried:
        new.enroll(f"S{n}", f"{n:064x}", vec(n, size=512), {}, origin=f"imp-first/{n}")
    listed, cursor, pages = [], None, 0
    while True:
        page, cursor = old.missing_from(new, cursor, limit=4)
        listed += page
        pages += 1
        if cursor is None:
            break
    assert pages > 2
    assert sorted(r.subject_id for r in listed) == sorted(f"S{n}" for n in range(23) if n not in carried)
    first = next(r for r in listed if r.subject_id == "S1")
    assert (first.origin, first.image_ref, first.image_sha256, first.metadata) == (
        "imp-first/1",
        "S1/1.jpg",
        f"{1:064x}",
        {"booking": "B1"},
    )
    excused = {r.record_id for r in listed[:2]}
    assert old.unmatched_in(new, excused)[0] == len(listed) - 2
    assert old.unmatched_in(new, {r.record_id for r in listed}) == (0, [])


def test_search_is_exact_before_and_after_the_index_is_quantized(tmp_path: Path) -> None:
    """The embedded index scans int8 codes and rescores in float32: the top 50 must be exact
    search's top 50, in order, whether or not the optimizer has quantized the points. (A small
    indexing threshold makes 1,000 points enough to be quantized.)"""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(200, 128)).astype(np.float32) * 0.1
    vectors = np.repeat(centres, 5, axis=0) + rng.normal(size=(1000, 128)).astype(np.float32) * 0.03
    gallery = Gallery(EdgeBackend(tmp_path / "gallery", indexing_threshold_kb=64))
    index = gallery.index_for(DLIB)
    for n, vector in enumerate(vectors):
        index.enroll(f"S{n}", f"{n:064x}", vector.tolist(), {})
    probes = centres[:20] + rng.normal(size=(20, 128)).astype(np.float32) * 0.03

    def agrees_with_brute_force() -> None:
        for probe in probes:
            exact = np.argsort(np.linalg.norm(vectors - probe, axis=1))[:50]
            hits = index.search(probe.tolist(), limit=50, max_distance=100.0)
            assert [h.subject_id for h in hits] == [f"S{n}" for n in exact]

    assert index.indexed() == 0
    agrees_with_brute_force()
    assert gallery.optimize_settled(quiet_s=0.0) == 1
    assert index.indexed() == len(vectors)  # every point now has its int8 code
    agrees_with_brute_force()


class RecordingStandIn(QdrantClient):
    """The local-mode STAND-IN for a Qdrant server, recording how collections are created (local mode
    itself drops the cluster settings a server keeps)."""

    created: dict[str, Any]

    def create_collection(self, collection_name: str, **kwargs: Any) -> bool:  # type: ignore[override]
        self.created = kwargs
        return super().create_collection(collection_name, **kwargs)


def test_a_server_collection_is_made_for_the_cluster_and_forensic_search(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
        client = RecordingStandIn(path=str(tmp_path / "qdrant-stand-in"))
        QdrantServerBackend(client, shard_number=3, replication_factor=2).open(DLIB)
        client.close()
    created = client.created
    assert (created["shard_number"], created["replication_factor"]) == (3, 2)
    # A write (a deletion above all) returns only once every copy has it.
    assert created["write_consistency_factor"] == 2
    assert created["hnsw_config"].m == 0  # no graph to miss a mate: int8 codes scanned in full
    assert created["quantization_config"].scalar.type == "int8"
    assert created["metadata"]["candor_model"]["id"] == DLIB.id


class CountingFlushes:
    """Wraps a real Qdrant Edge shard and counts its flushes (each is a disk sync)."""

    def __init__(self, shard: Any) -> None:
        self._shard = shard
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        self._shard.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)


def enrolment(n: int, origin: str = "", subject: str = "") -> Enrolment:
    return Enrolment(subject or f"S{n}", f"{n:064x}", vec(n), {"source": "booking"}, origin=origin)


def test_a_group_of_enrolments_is_stored_with_one_flush_and_each_is_searchable(tmp_path: Path) -> None:
    index = Gallery(EdgeBackend(tmp_path / "gallery")).index_for(DLIB)
    collection = index._collection  # the test counts the shard's disk syncs
    counting = CountingFlushes(collection._shard)  # type: ignore[attr-defined]
    collection._shard = counting  # type: ignore[attr-defined]
    outcomes = index.enroll_many([enrolment(n, origin=f"imp-one/{n}") for n in range(12)])
    assert counting.flushes == 1
    assert [created for _, created in outcomes] == [True] * 12
    for n, (record_id, _) in enumerate(outcomes):
        assert index.search(vec(n), limit=1, max_distance=0.01)[0].record_id == record_id


def test_a_group_keeps_the_rules_of_one_by_one_enrolment(open_backend: BackendFactory) -> None:
    index = Gallery(open_backend()).index_for(DLIB)  # type: ignore[arg-type]
    ((first, created),) = index.enroll_many([enrolment(1, origin="imp-one/1")])
    assert created
    outcomes = index.enroll_many(
        [
            enrolment(1, origin="imp-one/1"),  # redelivered: still this import's enrolment
            enrolment(1, origin="imp-two/0"),  # another import: a duplicate
            enrolment(2, origin="imp-two/1"),  # new
            enrolment(2, origin="imp-two/1"),  # the same item twice in one group: one record, enrolled
            enrolment(2, origin="imp-two/5"),  # the same photo as another item of the group: a duplicate
            enrolment(3),  # one by one
            enrolment(3),  # and again: a duplicate
        ]
    )
    second = outcomes[2][0]
    third = outcomes[5][0]
    assert outcomes == [
        (first, True),
        (first, False),
        (second, True),
        (second, True),
        (second, False),
        (third, True),
        (third, False),
    ]
    assert index.count() == 3
    assert index.enroll_many([]) == []

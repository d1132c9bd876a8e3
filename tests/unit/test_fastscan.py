"""The fast-scan candidate index: exact distances over a PQ shortlist, writes visible at once,
rebuilt from the store on restart, and safe under parallel searches and writes.

The galleries are face-shaped (clusters of a few photos around identity centres) and small, with a
low ``train_at`` so the product-quantized codes are trained and scanned as at a million faces.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from candor_matcher import EdgeBackend, Gallery, GalleryModel
from candor_matcher.fastscan import FastScanIndex

SFACE = GalleryModel(id="sface", version="1", metric="cosine", dimension=128)


def faces(count: int, seed: int = 5, spread: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in clusters of four (one identity each), and one new photo per identity."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(count // 4, 128)).astype(np.float32)
    photos = np.repeat(centres, 4, axis=0) + rng.normal(size=(count // 4 * 4, 128)).astype(np.float32) * spread
    probes = centres + rng.normal(size=centres.shape).astype(np.float32) * spread
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    return unit(photos), unit(probes)


def ids(count: int) -> list[str]:
    return [str(uuid.UUID(int=n + 1)) for n in range(count)]


def subjects(count: int) -> list[str]:
    """Four photos a subject, as `faces` makes them."""
    return [f"S{n // 4}" for n in range(count)]


def exact_top(vectors: np.ndarray, probe: np.ndarray, k: int) -> list[int]:
    return [int(i) for i in np.argsort(-(vectors @ probe), kind="stable")[:k]]


@pytest.fixture(scope="module")
def coded() -> tuple[FastScanIndex, np.ndarray, np.ndarray]:
    vectors, probes = faces(8000)
    index = FastScanIndex(128, "cosine", train_at=2000, candidates=400)
    index.add(ids(len(vectors)), subjects(len(vectors)), vectors, replace=False)
    assert index.coded
    return index, vectors, probes


def test_the_shortlist_is_rescored_exactly_and_keeps_every_true_mate(
    coded: tuple[FastScanIndex, np.ndarray, np.ndarray],
) -> None:
    index, vectors, probes = coded
    names = ids(len(vectors))
    recalls = []
    for n, probe in enumerate(probes[:100]):
        found = index.nearest(probe.tolist(), 20, threshold=-1.0)
        exact = exact_top(vectors, probe, 20)
        recalls.append(len({rid for rid, _, _ in found} & {names[i] for i in exact}) / 20)
        mates = {names[i] for i in range(4 * n, 4 * n + 4)}
        assert mates <= {rid for rid, _, _ in found}, "a true mate fell out of the shortlist"
        for rid, subject, score in found:  # every score is the exact cosine similarity
            assert score == pytest.approx(float(vectors[names.index(rid)] @ probe), abs=1e-5)
            assert subject == f"S{names.index(rid) // 4}"
        assert [s for _, _, s in found] == sorted((s for _, _, s in found), reverse=True)
    assert np.mean(recalls) >= 0.99


def test_the_threshold_cuts_the_answer(coded: tuple[FastScanIndex, np.ndarray, np.ndarray]) -> None:
    index, _, probes = coded
    everything = index.nearest(probes[0].tolist(), 50, threshold=-1.0)
    cut = everything[5][2]
    assert index.nearest(probes[0].tolist(), 50, threshold=cut) == everything[:6]


def test_an_enrolment_is_found_and_a_deletion_gone_at_once() -> None:
    vectors, probes = faces(4000, seed=8)
    index = FastScanIndex(128, "cosine", train_at=2000, candidates=400)
    index.add(ids(len(vectors)), subjects(len(vectors)), vectors)
    newcomer = str(uuid.uuid4())
    index.add([newcomer], ["new"], probes[3:4])  # the probe itself, enrolled after the codes were trained
    assert index.nearest(probes[3].tolist(), 5, -1.0)[0] == (newcomer, "new", pytest.approx(1.0, abs=1e-5))
    assert index.remove([newcomer]) == 1
    assert newcomer not in {rid for rid, _, _ in index.nearest(probes[3].tolist(), 50, -1.0)}
    assert index.remove([newcomer]) == 0  # already gone
    mate = ids(len(vectors))[12]
    index.add([mate], ["S3"], probes[3:4])  # re-enrolled with another vector: the old row dies
    assert index.live == len(vectors) + 0 and index.nearest(probes[3].tolist(), 1, -1.0)[0][0] == mate


def test_compaction_drops_dead_rows_and_keeps_the_answers() -> None:
    vectors, probes = faces(4000, seed=9)
    names = ids(len(vectors))
    index = FastScanIndex(128, "cosine", train_at=2000, candidates=400)
    index.add(names, subjects(len(names)), vectors)
    assert not index.compact()  # nothing due
    index.remove(names[:400])  # 10 % dead
    before = [index.nearest(p.tolist(), 4, -1.0) for p in probes[200:220]]  # the four true mates
    assert index.compact()
    assert index.live == 3600 and index.coded
    assert [index.nearest(p.tolist(), 4, -1.0) for p in probes[200:220]] == before
    index.remove(names[400:2500])  # below train_at: back to exact scans
    assert index.compact() and not index.coded
    assert index.nearest(probes[700].tolist(), 4, -1.0)[0][0] in names[2800:2804]


def test_euclidean_distances_are_exact() -> None:
    vectors, probes = faces(4000, seed=10)
    vectors, probes = vectors * 0.6, probes * 0.6  # dlib-like scale, not unit length
    index = FastScanIndex(128, "euclidean", train_at=2000, candidates=400)
    index.add(ids(len(vectors)), subjects(len(vectors)), vectors)
    found = index.nearest(probes[7].tolist(), 10, threshold=10.0)
    nearest = np.linalg.norm(vectors - probes[7], axis=1)
    assert [d for _, _, d in found] == pytest.approx(sorted(nearest)[:10], abs=1e-5)
    assert index.nearest(probes[7].tolist(), 10, threshold=float(sorted(nearest)[2])) == found[:3]


def test_parallel_searches_and_writes_agree_with_exact_search() -> None:
    """Eight threads search while two enrol and delete: nothing crashes, every answer holds only
    live records in exact order, and each writer's records are found the moment add returns."""
    vectors, probes = faces(6000, seed=11)
    index = FastScanIndex(128, "cosine", train_at=2000, candidates=400)
    index.add(ids(len(vectors)), subjects(len(vectors)), vectors)
    deleted: set[str] = set()
    failures: list[str] = []
    stop = threading.Event()

    def writer(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(150):
            vector = rng.normal(size=128).astype(np.float32)
            record = str(uuid.uuid4())
            index.add([record], [record], vector[None])
            if index.nearest(vector.tolist(), 1, -1.0)[0][0] != record:
                failures.append("an enrolment was not found at once")
            index.remove([record])
            deleted.add(record)

    def searcher(n: int) -> None:
        while not stop.is_set():
            found = index.nearest(probes[n].tolist(), 10, -1.0)
            scores = [s for _, _, s in found]
            if scores != sorted(scores, reverse=True) or len(found) != 10:
                failures.append("an answer out of order or short")

    with ThreadPoolExecutor(10) as pool:
        searches = [pool.submit(searcher, n) for n in range(8)]
        writes = [pool.submit(writer, seed) for seed in (1, 2)]
        for write in writes:
            write.result()
        stop.set()
        for search in searches:
            search.result()
    assert not failures
    for probe in probes[:20]:
        assert not {rid for rid, _, _ in index.nearest(probe.tolist(), 50, -1.0)} & deleted


def test_the_matcher_rebuilds_the_index_from_the_store_on_restart(tmp_path: Path) -> None:
    """Qdrant Edge stays the record: a reopened gallery answers from the shard's own scan until the
    index is read back, then from the index, with the same records and subjects either way."""
    vectors, probes = faces(2400, seed=12)
    gallery = Gallery(EdgeBackend(tmp_path / "gallery", index_train_at=2000))
    index = gallery.index_for(SFACE)
    for n, vector in enumerate(vectors):
        index.enroll(f"S{n // 4}", f"{n:064x}", vector.tolist(), {})
    index.delete_subject("S5")
    first = [index.search(p.tolist(), limit=10, max_distance=2.0) for p in probes[:10]]
    assert "S5" not in {h.subject_id for hits in first for h in hits}
    gallery.close()

    backend = EdgeBackend(tmp_path / "gallery", index_train_at=2000)
    reopened = Gallery(backend).index_for(SFACE)
    collection = reopened._collection
    assert collection.wait_for_index(60) and collection._index.coded
    assert collection._index.live == 2396
    again = [reopened.search(p.tolist(), limit=10, max_distance=2.0) for p in probes[:10]]
    assert [[h.record_id for h in hits] for hits in again] == [[h.record_id for h in hits] for hits in first]
    assert [h.distance for hits in again for h in hits] == pytest.approx(
        [h.distance for hits in first for h in hits], abs=1e-5
    )

"""A fast-scan candidate index beside the gallery's store of record.

Why (figures in bench/RESULTS.md, `bench/gallery_scale.py`): at a million faces the store's own
exhaustive int8 scan answers in about 20 ms, and Qdrant's product and binary quantization, with
the oversampling a forensic recall needs, are no faster. FAISS's 4-bit product-quantized fast-scan
codes (`IndexPQFastScan`, 32 bytes a face at 128 dimensions) are scanned in full with SIMD lookup
tables in 2 to 3 ms; the best ``CANDIDATES`` of that scan are then rescored exactly with the
float32 vectors, so every distance returned is exact and only the shortlist is approximate.

Nothing here is the record: the index is rebuilt from the store (`EdgeCollection.build_index`)
when a matcher opens a gallery, and every write to the store is applied here under the same lock,
so an enrolment is searchable and a deletion gone as soon as the write returns. Deleted rows stay
in the arrays, marked dead, until `compact` drops them (the matcher's quiet-time optimisation).

Below ``train_at`` vectors no codes exist and every search is an exact scan of the float32
vectors (a few milliseconds at that size); product quantization needs a few thousand vectors to
train on, and at that size it would not be faster.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

import numpy as np

from candor_kit.cores import openmp_sized_to_quota

openmp_sized_to_quota()  # before FAISS loads OpenMP, which reads its thread count then
import faiss  # noqa: E402 - at import, so a matcher without it fails at start, not at its 20,000th face

#: Below this many vectors every search is exact (no codes are trained).
TRAIN_AT = 20_000
#: Candidates from the code scan rescored exactly: recall@50 0.9999 at 1M synthetic SFace faces.
CANDIDATES = 4_000
#: Retrain the codes when the gallery has grown this many times since they were trained.
RETRAIN_GROWTH = 4
#: Drop dead rows when they are this share of the rows.
COMPACT_DEAD_SHARE = 0.05
#: At most this many vectors train the codes (more adds time, not accuracy).
TRAIN_SAMPLE = 100_000
#: Vectors are kept in blocks this large; capacity grows by whole blocks.
_BLOCK = 65_536


def _id_keys(record_ids: Sequence[str]) -> np.ndarray:
    """Record ids (UUIDs) as rows of two 64-bit halves."""
    raw = b"".join(uuid.UUID(record_id).bytes for record_id in record_ids)
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, 2)


def _id_texts(keys: np.ndarray) -> list[str]:
    """Rows of the id table back to their record ids (as str(uuid.UUID(...)) spells them), in one
    conversion for all of a search's results rather than one a row."""
    h = keys.astype(">u8").tobytes().hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, len(h), 32)
    ]


def _subquantizers(dimension: int) -> int:
    """Two dimensions per 4-bit sub-quantizer where the dimension allows it (32 bytes at 128)."""
    return dimension // 2 if dimension % 2 == 0 else dimension


class FastScanIndex:
    """Exact-distance nearest neighbours over 4-bit PQ fast-scan candidates. Thread-safe."""

    def __init__(self, dimension: int, metric: str, train_at: int = TRAIN_AT, candidates: int = CANDIDATES) -> None:
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"unsupported metric {metric!r}")
        self.dimension = dimension
        self.metric = metric
        self._train_at = max(train_at, 16 * 40)  # 16 centroids a sub-quantizer, 40 points each at least
        self._candidates = candidates
        #: Searches and writes take ``_lock``; writers also take ``_writing`` (first), so one
        #: writer at a time and a writer's id scan runs while searches go on.
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        self._vectors = np.empty((0, dimension), dtype=np.float32)
        self._ids = np.empty((0, 2), dtype=np.uint64)
        self._alive = np.empty(0, dtype=bool)
        #: Each row's subject id, so a search never waits on the store (whose reads queue behind
        #: its flushes). Strings are shared with the caller, about 60 bytes a row.
        self._subjects: list[str] = []
        self._rows = 0
        self._dead = 0
        self._codes: object | None = None  # a faiss.IndexPQFastScan over rows [0, self._rows)
        self._trained_on = 0

    # --- writes ----------------------------------------------------------------------------------

    def add(
        self,
        record_ids: Sequence[str],
        subject_ids: Sequence[str],
        vectors: np.ndarray | Sequence[Sequence[float]],
        replace: bool = True,
    ) -> None:
        """Add records with their subjects. A record already here is replaced (its old row dies)
        unless ``replace`` is false, for loading ids known to be new (a scan of the store)."""
        matrix = self._prepare(np.asarray(vectors, dtype=np.float32).reshape(len(record_ids), self.dimension))
        keys = _id_keys(record_ids)
        with self._writing:
            rows = self._rows_of(keys) if replace else np.empty(0, dtype=np.int64)
            with self._lock:
                self._kill(rows)
                self._append(keys, subject_ids, matrix)

    def _append(self, keys: np.ndarray, subject_ids: Sequence[str], matrix: np.ndarray) -> None:
        """Append rows (under both locks)."""
        first = self._rows
        self._grow(first + len(keys))
        self._vectors[first : first + len(keys)] = matrix
        self._ids[first : first + len(keys)] = keys
        self._alive[first : first + len(keys)] = True
        self._subjects.extend(subject_ids)
        self._rows += len(keys)
        if self._codes is not None:
            self._codes.add(matrix)  # type: ignore[attr-defined]
        elif self.live >= self._train_at:
            self._codes, self._trained_on = self._encode(self._vectors[: self._rows]), self.live

    def remove(self, record_ids: Sequence[str]) -> int:
        """Mark records dead; returns how many were here."""
        if not record_ids:
            return 0
        keys = _id_keys(record_ids)
        with self._writing:
            rows = self._rows_of(keys)
            with self._lock:
                return self._kill(rows)

    def _rows_of(self, keys: np.ndarray) -> np.ndarray:
        """The live rows holding these ids. Under the write lock only: rows change only under it,
        so searches go on while a write scans the id table (8 bytes a row, then the few matches)."""
        highs = self._ids[: self._rows, 0]
        wanted = {(int(high), int(low)) for high, low in keys}
        hits = np.flatnonzero(np.isin(highs, keys[:, 0]))  # the few rows sharing a first half
        return np.array(
            [row for row in hits if self._alive[row] and (int(highs[row]), int(self._ids[row, 1])) in wanted],
            dtype=np.int64,
        )

    def _kill(self, rows: np.ndarray) -> int:
        """Mark these live rows dead (under both locks)."""
        self._alive[rows] = False
        self._dead += len(rows)
        return len(rows)

    def _grow(self, rows: int) -> None:
        if rows <= len(self._vectors):
            return
        capacity = max(rows, 2 * len(self._vectors))
        capacity = -(-capacity // _BLOCK) * _BLOCK
        for name in ("_vectors", "_ids", "_alive"):
            old = getattr(self, name)
            new = np.zeros((capacity, *old.shape[1:]), dtype=old.dtype)
            new[: self._rows] = old[: self._rows]
            setattr(self, name, new)

    def _prepare(self, matrix: np.ndarray) -> np.ndarray:
        """Unit length for cosine (the store normalises the same way), contiguous float32."""
        if self.metric == "cosine":
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix = matrix / np.where(norms > 0, norms, 1.0)
        return np.ascontiguousarray(matrix, dtype=np.float32)

    def _encode(self, vectors: np.ndarray) -> object:
        """Train 4-bit PQ fast-scan codes on a sample of ``vectors`` and encode them all."""
        metric = faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2
        codes = faiss.IndexPQFastScan(self.dimension, _subquantizers(self.dimension), 4, metric)
        sample = vectors
        if len(vectors) > TRAIN_SAMPLE:
            rows = np.random.default_rng(0).choice(len(vectors), TRAIN_SAMPLE, replace=False)
            sample = vectors[np.sort(rows)]
        codes.train(np.ascontiguousarray(sample))
        codes.add(np.ascontiguousarray(vectors))
        return codes

    # --- maintenance -----------------------------------------------------------------------------

    def compact(self) -> bool:
        """Drop dead rows and retrain the codes once the gallery has outgrown them; False when
        neither was due. Writes wait meanwhile; searches go on against the old arrays while the
        new ones are built."""
        with self._writing:
            rows, live = self._rows, self.live
            shrink = self._dead > COMPACT_DEAD_SHARE * max(rows, 1)
            retrain = self._codes is not None and live >= RETRAIN_GROWTH * self._trained_on
            untrain = self._codes is not None and live < self._train_at
            if not (shrink or retrain or untrain):
                return False
            keep = self._alive[:rows]
            kept_vectors = np.ascontiguousarray(self._vectors[:rows][keep])
            kept_ids = self._ids[:rows][keep].copy()
            kept_subjects = [self._subjects[row] for row in np.flatnonzero(keep)]
            codes = self._encode(kept_vectors) if len(kept_vectors) >= self._train_at else None
            with self._lock:
                self._vectors, self._ids, self._subjects = kept_vectors, kept_ids, kept_subjects
                self._alive = np.ones(len(kept_ids), dtype=bool)
                self._rows, self._dead = len(kept_ids), 0
                self._codes, self._trained_on = codes, (len(kept_ids) if codes is not None else 0)
            return True

    @property
    def live(self) -> int:
        """How many records the index holds."""
        return self._rows - self._dead

    @property
    def coded(self) -> bool:
        """Whether searches scan codes (False: an exact scan)."""
        return self._codes is not None

    # --- search ----------------------------------------------------------------------------------

    def nearest(self, vector: Sequence[float], limit: int, threshold: float) -> list[tuple[str, str, float]]:
        """Up to ``limit`` (record id, subject id, score) within ``threshold``, best first: cosine
        similarity (at least ``threshold``) or Euclidean distance (at most ``threshold``), the
        scores the store itself returns. The shortlist is at least 8 x ``limit``; when that nears
        the gallery's size the scan is exact."""
        query = self._prepare(np.asarray(vector, dtype=np.float32).reshape(1, self.dimension))[0]
        with self._lock:
            rows, scores = self._candidates_for(query, limit)
            ranked = -scores if self._cosine else scores
            order = np.argpartition(ranked, limit)[:limit] if len(ranked) > limit else np.arange(len(ranked))
            order = order[np.argsort(ranked[order], kind="stable")]
            best = scores[order]
            kept = best >= threshold if self._cosine else best <= threshold
            top = rows[order[kept]]
            subjects = [self._subjects[row] for row in top.tolist()]
            ids = _id_texts(self._ids[top])
        return list(zip(ids, subjects, best[kept].tolist(), strict=True))

    @property
    def _cosine(self) -> bool:
        return self.metric == "cosine"

    def _scores(self, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Exact scores of these rows (under the lock)."""
        block = self._vectors[rows]
        if self._cosine:
            return block @ query
        return np.sqrt(np.maximum(np.einsum("ij,ij->i", block - query, block - query), 0.0))

    def _exact(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every live row with its exact score (under the lock)."""
        rows = np.flatnonzero(self._alive[: self._rows])
        return rows, self._scores(rows, query)

    def _candidates_for(self, query: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """The live rows worth rescoring and their exact scores (under the lock)."""
        wanted = max(self._candidates, 8 * limit)
        if self._codes is None or wanted * 4 >= self._rows:
            return self._exact(query)
        _, found = self._codes.search(query.reshape(1, -1), wanted)  # type: ignore[attr-defined]
        rows = np.sort(found[0][found[0] >= 0])  # sorted: the gather below reads memory in order
        rows = rows[self._alive[rows]]
        return rows, self._scores(rows, query)

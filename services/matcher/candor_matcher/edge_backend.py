"""The embedded backend: Qdrant Edge shards on local disk, one folder per model, each with a
fast-scan candidate index beside it.

The shard is the record: every write goes to it and is flushed before the call returns. Searches
read the candidate index (`candor_matcher.fastscan`: FAISS's 4-bit product-quantized codes scanned
in full, the best 4,000 rescored exactly with float32 vectors), which the matcher builds from the
shard when it opens a gallery and keeps in step with every write under one lock. Until the index
is built (seconds at start: 23 s at a million faces) searches read the shard's own exhaustive
scan: no HNSW graph (a graph at this machine's budget lost true mates on clustered face vectors),
int8 codes scanned in full and the best ``OVERSAMPLING`` x limit rescored in float32. Why this
design and not Qdrant's own product or binary codes: bench/RESULTS.md (`bench/gallery_scale.py`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import structlog
from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeOptimizersConfig,
    EdgeShard,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    HnswIndexConfig,
    MatchValue,
    Memory,
    PayloadSchemaType,
    Point,
    QuantizationSearchParams,
    Query,
    QueryRequest,
    ScalarQuantizationConfig,
    ScalarType,
    ScrollRequest,
    SearchParams,
    UpdateOperation,
)

from candor_kit.errors import PreconditionFailed
from candor_matcher.fastscan import TRAIN_AT, FastScanIndex
from candor_matcher.gallery import INDEXED_FIELDS, RECORD_FIELDS, GalleryModel, ScoredRecord, StoredRecord, check_model
from candor_matcher.page_out import page_out

log = structlog.get_logger("candor.matcher")
_DISTANCE = {"euclidean": Distance.Euclid, "cosine": Distance.Cosine}
_SCHEMA = {"keyword": PayloadSchemaType.Keyword, "integer": PayloadSchemaType.Integer}
#: Candidates kept from the int8 scan for every one wanted, then rescored in float32.
OVERSAMPLING = 4.0
#: The most records one subject may hold that a subject deletion reads back (far above any real
#: subject's photos; Qdrant Edge's scroll is paged, and a deletion reads one page).
MAX_SUBJECT_RECORDS = 100_000
#: Every search: scan the quantized codes, rescore the shortlist with the original vectors.
SEARCH_PARAMS = SearchParams(quantization=QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING))


def shard_config(dimension: int, metric: str, indexing_threshold_kb: int | None = None) -> EdgeConfig:
    """A gallery shard: float32 vectors and their int8 codes on disk, no HNSW graph (m=0); searches
    read the shard itself only until the candidate index is built. Segments grow to
    ``indexing_threshold_kb`` (Qdrant's default when None) before they are quantized."""
    return EdgeConfig(
        # On disk (memory-mapped): the candidate index keeps the copy searches read, so the shard's
        # pages are read once when the index is built and are cache the kernel may reclaim.
        vectors=EdgeVectorParams(size=dimension, distance=_DISTANCE[metric], memory=Memory.Cold),
        hnsw_config=HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
        quantization_config=ScalarQuantizationConfig(type=ScalarType.Int8, quantile=0.99, memory=Memory.Cold),
        optimizers=EdgeOptimizersConfig(indexing_threshold=indexing_threshold_kb),
    )


def _subject(subject_id: str) -> Filter:
    return Filter(must=[FieldCondition(key="subject_id", match=MatchValue(subject_id))])


#: Records read from the shard a page at a time when the candidate index is built.
_SCROLL_PAGE = 10_000


class EdgeCollection:
    """One model's Qdrant Edge shard, the store of record, with a fast-scan candidate index
    (`candor_matcher.fastscan`) beside it once `build_index` has read the shard. Every write goes
    to the shard and then the index under one lock, so a search sees it as soon as it returns.
    Not for several processes at once: one matcher owns it."""

    def __init__(
        self, shard: EdgeShard, model: GalleryModel, train_at: int = TRAIN_AT, folder: Path | None = None
    ) -> None:
        """``folder`` is the shard's: its pages that building the index or optimising left resident
        are handed back to the kernel (`candor_matcher.page_out`)."""
        self._shard = shard
        self._folder = folder
        self._writes = threading.Lock()
        self._index = FastScanIndex(model.dimension, model.metric, train_at)
        self._ready = False
        self._builder: threading.Thread | None = None

    def build_index(self) -> int:
        """Read every vector of the shard into the candidate index; writes wait meanwhile and
        searches use the shard's own scan until it is done. Returns how many records it holds."""
        with self._writes:
            after = None
            while True:
                records, after = self._shard.scroll(
                    ScrollRequest(offset=after, limit=_SCROLL_PAGE, with_payload=["subject_id"], with_vector=True)
                )
                if records:
                    vectors = np.array([r.vector for r in records], dtype=np.float32)
                    subjects = [str((r.payload or {}).get("subject_id", "")) for r in records]
                    self._index.add([str(r.id) for r in records], subjects, vectors, replace=False)
                if after is None:
                    break
            self._ready = True
        self._hand_back_pages()
        return self._index.live

    def origins(self, record_ids: list[str]) -> dict[str, str]:
        """The origin of each of these records the shard holds."""
        found = self._shard.retrieve(record_ids, with_payload=["origin"], with_vector=False)
        return {str(r.id): str((r.payload or {}).get("origin", "")) for r in found}

    def upsert(self, records: list[tuple[str, list[float], dict[str, object]]]) -> None:
        """Store records in one update and one flush (a disk sync), then add them to the index."""
        with self._writes:
            self._shard.update(UpdateOperation.upsert_points([Point(*record) for record in records]))
            self._shard.flush()
            if self._ready:
                ids = [record_id for record_id, _, _ in records]
                subjects = [str(payload.get("subject_id", "")) for _, _, payload in records]
                self._index.add(ids, subjects, [vector for _, vector, _ in records])

    def nearest(self, vector: list[float], limit: int, score_threshold: float) -> list[ScoredRecord]:
        """Nearest records within the score threshold: from the candidate index once built, from
        the shard's own scan before."""
        if self._ready:
            found = self._index.nearest(vector, limit, score_threshold)
            return [ScoredRecord(record_id, score, subject) for record_id, subject, score in found]
        request = QueryRequest(
            limit=limit,
            query=Query.Nearest(vector),
            with_payload=["subject_id"],
            score_threshold=score_threshold,
            params=SEARCH_PARAMS,
        )
        return [
            ScoredRecord(str(p.id), float(p.score), str((p.payload or {}).get("subject_id", "")))
            for p in self._shard.query(request)
        ]

    def count(self, subject_id: str | None = None) -> int:
        """How many records (of one subject, when given)."""
        return int(self._shard.count(CountRequest(exact=True, filter=_subject(subject_id) if subject_id else None)))

    def delete_subject(self, subject_id: str) -> list[str]:
        """Remove a subject's records and flush; returns their ids."""
        with self._writes:
            request = ScrollRequest(
                filter=_subject(subject_id), limit=MAX_SUBJECT_RECORDS, with_payload=False, with_vector=False
            )
            records, _ = self._shard.scroll(request)
            ids = [str(r.id) for r in records]
            if ids:
                self._shard.update(UpdateOperation.delete_points_by_filter(_subject(subject_id)))
                self._shard.flush()
                if self._ready:
                    self._index.remove(ids)
            return ids

    def delete_record(self, record_id: str) -> str | None:
        """Remove one record and flush; returns its subject id."""
        with self._writes:
            found = self._shard.retrieve([record_id], with_payload=["subject_id"], with_vector=False)
            if not found:
                return None
            self._shard.update(UpdateOperation.delete_points([record_id]))
            self._shard.flush()
            if self._ready:
                self._index.remove([record_id])
            return str((found[0].payload or {}).get("subject_id", ""))

    def page(self, after: str | None, limit: int) -> tuple[list[StoredRecord], str | None]:
        """Records in id order from the cursor ``after``, and the next page's cursor."""
        records, following = self._shard.scroll(
            ScrollRequest(offset=after, limit=limit, with_payload=RECORD_FIELDS, with_vector=False)
        )
        found = [StoredRecord.from_payload(str(record.id), record.payload) for record in records]
        return found, (str(following) if following is not None else None)

    def existing(self, record_ids: list[str]) -> set[str]:
        """Which of these records the shard holds."""
        return {str(record.id) for record in self._shard.retrieve(record_ids, with_payload=False, with_vector=False)}

    def optimize(self) -> bool:
        """Quantize and merge the segments written since the last run, and compact the candidate
        index (dead rows out, codes retrained once the gallery has outgrown them); blocks. Searches
        go on meanwhile."""
        optimized = bool(self._shard.optimize())
        if self._ready:
            optimized = self._index.compact() or optimized
            if optimized:
                self._hand_back_pages()
        return optimized

    def _hand_back_pages(self) -> None:
        """Once the index holds every vector, the shard's pages a full read (the build, an
        optimisation) left resident are not read by searches: hand them back to the kernel."""
        if self._folder is not None:
            advised = page_out(self._folder)
            log.info("gallery_pages_handed_back", mapped_mib=advised >> 20)

    def indexed(self) -> int:
        """How many vectors have their int8 codes (the rest are scanned in float32)."""
        return int(self._shard.info().indexed_vectors_count)

    def close(self) -> None:
        """Flush and close the shard (after an index build under way has finished)."""
        with self._writes:
            self._ready = False
            self._shard.flush()
            self._shard.close()

    def build_index_in_background(self) -> threading.Thread:
        """`build_index` on a thread of its own, so a matcher with a large gallery answers (from
        the shard's scan) while it runs; a failure is logged and searches stay on the shard."""

        def build() -> None:
            started = time.monotonic()
            try:
                records = self.build_index()
            except Exception as exc:  # noqa: BLE001 - searches stay correct on the shard's scan
                log.error("gallery_index_failed", error=str(exc))
                return
            log.info("gallery_index_built", records=records, seconds=round(time.monotonic() - started, 1))

        self._builder = threading.Thread(target=build, name="gallery-index", daemon=True)
        self._builder.start()
        return self._builder

    def wait_for_index(self, timeout: float | None = None) -> bool:
        """Wait for a background build to end; True when searches use the index."""
        if self._builder is not None:
            self._builder.join(timeout)
        return self._ready


class EdgeBackend:
    """Qdrant Edge under one data folder: ``<model id>/shard`` with ``model.json`` beside it."""

    def __init__(
        self, data_dir: Path, indexing_threshold_kb: int | None = None, index_train_at: int = TRAIN_AT
    ) -> None:
        self._data_dir = data_dir
        self._indexing_threshold_kb = indexing_threshold_kb
        self._train_at = index_train_at
        data_dir.mkdir(parents=True, exist_ok=True)

    def models(self) -> list[GalleryModel]:
        """Models with a shard here."""
        return [GalleryModel(**json.loads(p.read_text())) for p in sorted(self._data_dir.glob("*/model.json"))]

    def open(self, model: GalleryModel) -> EdgeCollection:
        """Load the model's shard, or create it with its payload indexes."""
        check_model(model)
        folder = self._data_dir / model.id
        manifest = folder / "model.json"
        if manifest.exists():
            stored = GalleryModel(**json.loads(manifest.read_text()))
            if stored != model:
                raise PreconditionFailed(
                    f"gallery {model.id} holds {stored.id} {stored.version} ({stored.dimension}-d {stored.metric}); "
                    f"refusing version {model.version}"
                )
            shard_folder = folder / "shard"
            collection = EdgeCollection(EdgeShard.load(str(shard_folder)), model, self._train_at, shard_folder)
            collection.build_index_in_background()
            return collection
        folder.mkdir(parents=True, exist_ok=True)
        config = shard_config(model.dimension, model.metric, self._indexing_threshold_kb)
        shard = EdgeShard.create(str(folder / "shard"), config)
        for field, kind in INDEXED_FIELDS.items():
            shard.update(UpdateOperation.create_field_index(field, _SCHEMA[kind]))
        shard.flush()
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(model), sort_keys=True))
        tmp.replace(manifest)
        collection = EdgeCollection(shard, model, self._train_at, folder / "shard")
        collection.build_index()  # empty: at once
        return collection

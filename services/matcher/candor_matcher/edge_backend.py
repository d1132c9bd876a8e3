"""The embedded backend: Qdrant Edge shards on local disk, one folder per model."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from qdrant_edge import (
    CountRequest,
    Distance,
    EdgeConfig,
    EdgeShard,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    MatchValue,
    PayloadSchemaType,
    Point,
    Query,
    QueryRequest,
    UpdateOperation,
)

from candor_kit.errors import PreconditionFailed
from candor_matcher.gallery import INDEXED_FIELDS, GalleryModel, ScoredRecord, check_model

_DISTANCE = {"euclidean": Distance.Euclid, "cosine": Distance.Cosine}
_SCHEMA = {"keyword": PayloadSchemaType.Keyword, "integer": PayloadSchemaType.Integer}


def _subject(subject_id: str) -> Filter:
    return Filter(must=[FieldCondition(key="subject_id", match=MatchValue(subject_id))])


class EdgeCollection:
    """One model's Qdrant Edge shard. Not for several processes at once: one matcher owns it."""

    def __init__(self, shard: EdgeShard) -> None:
        self._shard = shard

    def contains(self, record_id: str) -> bool:
        """Whether the record exists."""
        return bool(self._shard.retrieve([record_id], with_payload=False, with_vector=False))

    def upsert(self, record_id: str, vector: list[float], payload: dict[str, object]) -> None:
        """Store one record and flush."""
        self._shard.update(UpdateOperation.upsert_points([Point(record_id, vector, payload)]))
        self._shard.flush()

    def nearest(self, vector: list[float], limit: int, score_threshold: float) -> list[ScoredRecord]:
        """Nearest records within the score threshold."""
        request = QueryRequest(
            limit=limit, query=Query.Nearest(vector), with_payload=["subject_id"], score_threshold=score_threshold
        )
        return [
            ScoredRecord(str(p.id), float(p.score), str((p.payload or {}).get("subject_id", "")))
            for p in self._shard.query(request)
        ]

    def count(self, subject_id: str | None = None) -> int:
        """How many records (of one subject, when given)."""
        return int(self._shard.count(CountRequest(exact=True, filter=_subject(subject_id) if subject_id else None)))

    def delete_subject(self, subject_id: str) -> int:
        """Remove a subject's records and flush."""
        count = self.count(subject_id)
        if count:
            self._shard.update(UpdateOperation.delete_points_by_filter(_subject(subject_id)))
            self._shard.flush()
        return count

    def delete_record(self, record_id: str) -> str | None:
        """Remove one record and flush; returns its subject id."""
        found = self._shard.retrieve([record_id], with_payload=["subject_id"], with_vector=False)
        if not found:
            return None
        self._shard.update(UpdateOperation.delete_points([record_id]))
        self._shard.flush()
        return str((found[0].payload or {}).get("subject_id", ""))

    def close(self) -> None:
        """Flush and close the shard."""
        self._shard.flush()
        self._shard.close()


class EdgeBackend:
    """Qdrant Edge under one data folder: ``<model id>/shard`` with ``model.json`` beside it."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
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
            return EdgeCollection(EdgeShard.load(str(folder / "shard")))
        folder.mkdir(parents=True, exist_ok=True)
        config = EdgeConfig(vectors=EdgeVectorParams(size=model.dimension, distance=_DISTANCE[model.metric]))
        shard = EdgeShard.create(str(folder / "shard"), config)
        for field, kind in INDEXED_FIELDS.items():
            shard.update(UpdateOperation.create_field_index(field, _SCHEMA[kind]))
        shard.flush()
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(model), sort_keys=True))
        tmp.replace(manifest)
        return EdgeCollection(shard)

"""The gallery: one Qdrant Edge shard per face model, on disk.

Every shard records the model it belongs to in ``model.json`` beside it; a write or search with
another model's vectors is refused, so vectors of different models never mix.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
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
    Point,
    Query,
    QueryRequest,
    UpdateOperation,
)

from candor_kit.errors import InvalidInput, PreconditionFailed

#: Record ids derive from subject id and image hash, so re-enrolling the same photo is a no-op.
RECORD_NAMESPACE = uuid.UUID("6f1c3d52-8a61-4c0e-9b7e-2a4d5e6f7a80")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_METRICS = {"euclidean": Distance.Euclid, "cosine": Distance.Cosine}


@dataclass(frozen=True)
class GalleryModel:
    """The model a gallery collection is tied to."""

    id: str
    version: str
    metric: str
    dimension: int


@dataclass(frozen=True)
class Hit:
    """One gallery record near a probe."""

    record_id: str
    subject_id: str
    distance: float


def record_id_for(subject_id: str, image_sha256: str) -> str:
    """The stable record id of one subject's image."""
    return str(uuid.uuid5(RECORD_NAMESPACE, f"{subject_id}\x00{image_sha256}"))


class GalleryIndex:
    """One model's collection: enrol, search, delete, count."""

    def __init__(self, folder: Path, model: GalleryModel) -> None:
        if model.metric not in _METRICS:
            raise PreconditionFailed(f"unsupported metric {model.metric!r}")
        self.model = model
        self._write_lock = threading.Lock()
        manifest = folder / "model.json"
        shard_dir = folder / "shard"
        if manifest.exists():
            stored = GalleryModel(**json.loads(manifest.read_text()))
            if stored != model:
                raise PreconditionFailed(
                    f"gallery {folder.name} holds {stored.id} {stored.version} "
                    f"({stored.dimension}-d {stored.metric}); refusing {model.version} vectors"
                )
            self._shard = EdgeShard.load(str(shard_dir))
        else:
            folder.mkdir(parents=True, exist_ok=True)
            config = EdgeConfig(vectors=EdgeVectorParams(size=model.dimension, distance=_METRICS[model.metric]))
            self._shard = EdgeShard.create(str(shard_dir), config)
            self._shard.flush()
            tmp = manifest.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(model), sort_keys=True))
            tmp.replace(manifest)

    def _check(self, vector: list[float]) -> None:
        if len(vector) != self.model.dimension:
            raise InvalidInput(f"vector has {len(vector)} dimensions; {self.model.id} has {self.model.dimension}")

    def enroll(
        self, subject_id: str, image_sha256: str, vector: list[float], metadata: Mapping[str, str]
    ) -> tuple[str, bool]:
        """Store one face; returns the record id and whether it was new. Durable on return."""
        self._check(vector)
        record_id = record_id_for(subject_id, image_sha256)
        payload = {
            "subject_id": subject_id,
            "image_sha256": image_sha256,
            "model_id": self.model.id,
            "model_version": self.model.version,
            "enrolled_at": int(time.time()),
            "metadata": dict(metadata),
        }
        with self._write_lock:
            created = not self._shard.retrieve([record_id], with_payload=False, with_vector=False)
            if created:
                self._shard.update(UpdateOperation.upsert_points([Point(record_id, vector, payload)]))
                self._shard.flush()
        return record_id, created

    def search(self, vector: list[float], limit: int, max_distance: float) -> list[Hit]:
        """The best record of each of up to ``limit`` subjects within ``max_distance``, nearest first."""
        self._check(vector)
        cosine = self.model.metric == "cosine"
        # Several photos of one subject can crowd the top; over-fetch, then keep each subject's best.
        request = QueryRequest(
            limit=min(limit * 4, 1000),
            query=Query.Nearest(vector),
            with_payload=["subject_id"],
            score_threshold=(1.0 - max_distance) if cosine else max_distance,
        )
        hits: list[Hit] = []
        seen: set[str] = set()
        for point in self._shard.query(request):
            subject = str((point.payload or {}).get("subject_id", ""))
            if subject in seen:
                continue
            seen.add(subject)
            distance = (1.0 - point.score) if cosine else point.score
            hits.append(Hit(record_id=str(point.id), subject_id=subject, distance=float(distance)))
            if len(hits) == limit:
                break
        return hits

    def delete_subject(self, subject_id: str) -> int:
        """Remove every record of a subject; durable on return. Returns how many went."""
        subject_filter = Filter(must=[FieldCondition(key="subject_id", match=MatchValue(subject_id))])
        with self._write_lock:
            count = self._shard.count(CountRequest(exact=True, filter=subject_filter))
            if count:
                self._shard.update(UpdateOperation.delete_points_by_filter(subject_filter))
                self._shard.flush()
        return int(count)

    def count(self) -> int:
        """How many records the collection holds."""
        return int(self._shard.count(CountRequest(exact=True)))

    def close(self) -> None:
        """Flush and release the shard."""
        with self._write_lock:
            self._shard.flush()
            self._shard.close()


class Gallery:
    """All models' collections under one data folder."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._indexes: dict[str, GalleryIndex] = {}
        self._lock = threading.Lock()
        data_dir.mkdir(parents=True, exist_ok=True)
        for manifest in sorted(data_dir.glob("*/model.json")):
            model = GalleryModel(**json.loads(manifest.read_text()))
            self._indexes[model.id] = GalleryIndex(manifest.parent, model)

    def index_for(self, model: GalleryModel) -> GalleryIndex:
        """The collection for a model, created on first use; a version mismatch is refused."""
        if not _SAFE_NAME.match(model.id):
            raise InvalidInput(f"model id {model.id!r} is not a safe collection name")
        with self._lock:
            index = self._indexes.get(model.id)
            if index is None:
                index = self._indexes[model.id] = GalleryIndex(self._data_dir / model.id, model)
            elif index.model != model:
                raise PreconditionFailed(
                    f"gallery {model.id} holds version {index.model.version} ({index.model.dimension}-d "
                    f"{index.model.metric}); refusing version {model.version}"
                )
            return index

    def existing(self, model_id: str) -> GalleryIndex | None:
        """The collection for a model id, if there is one."""
        return self._indexes.get(model_id)

    def all_indexes(self) -> list[GalleryIndex]:
        """Every collection."""
        return list(self._indexes.values())

    def close(self) -> None:
        """Flush and close every collection."""
        for index in self._indexes.values():
            index.close()
        self._indexes.clear()

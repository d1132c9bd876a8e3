"""The gallery: one vector collection per face model, over a Qdrant backend.

`GalleryIndex` holds what Candor decides (record ids, payloads, model checks, one candidate per
subject); a backend (`EdgeBackend` for the embedded default, `QdrantServerBackend` for a Qdrant
server or cluster) holds the vectors. Every collection records the model it belongs to, and a
write or search with another model's vectors is refused, so vectors of different models never mix.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, overload

from candor_kit.errors import InvalidInput, PreconditionFailed
from candor_kit.identifiers import record_id_for

#: Record ids derive from subject id and image hash, so re-enrolling the same photo is a no-op.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
METRICS = ("euclidean", "cosine")
#: The most records one search reads while collecting distinct subjects.
MAX_FETCH = 100_000
#: Payload fields with an index, for filtered search and deletion.
INDEXED_FIELDS = {
    "subject_id": "keyword",
    "image_sha256": "keyword",
    "source": "keyword",
    "status": "keyword",
    "enrolled_at": "integer",
}


@dataclass(frozen=True)
class GalleryModel:
    """The model a gallery collection is tied to."""

    id: str
    version: str
    metric: str
    dimension: int

    @classmethod
    def from_ref(cls, ref: ModelRefLike) -> GalleryModel:
        """The gallery's view of a model reference (a common.v1.ModelRef); refuses an incomplete one."""
        if not ref.id or not ref.version or ref.dimension <= 0:
            raise InvalidInput("model id, version and dimension are required")
        return cls(id=ref.id, version=ref.version, metric=ref.metric, dimension=ref.dimension)


class ModelRefLike(Protocol):
    """What a model reference carries (common.v1.ModelRef)."""

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


@dataclass(frozen=True)
class ScoredRecord:
    """A backend's raw answer: record id, the engine's score, and the subject."""

    record_id: str
    score: float
    subject_id: str


@dataclass(frozen=True)
class StoredRecord:
    """A gallery record without its vector: what re-embedding it with another model needs."""

    record_id: str
    subject_id: str
    image_sha256: str
    origin: str
    image_ref: str
    metadata: dict[str, str]

    @classmethod
    def from_payload(cls, record_id: str, payload: Mapping[str, object] | None) -> StoredRecord:
        """A record from its stored payload."""
        payload = payload or {}
        metadata = payload.get("metadata")
        return cls(
            record_id=record_id,
            subject_id=str(payload.get("subject_id", "")),
            image_sha256=str(payload.get("image_sha256", "")),
            origin=str(payload.get("origin", "")),
            image_ref=str(payload.get("image_ref", "")),
            metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {},
        )


@dataclass(frozen=True)
class Enrolment:
    """One face to store, and where it came from (``origin``: ``<import id>/<item>``)."""

    subject_id: str
    image_sha256: str
    vector: list[float]
    metadata: dict[str, str]
    origin: str = ""
    image_ref: str = ""


#: The payload fields a StoredRecord is made of.
RECORD_FIELDS = ["subject_id", "image_sha256", "origin", "image_ref", "metadata"]


class VectorCollection(Protocol):
    """One model's vectors in a backend. Writes are durable when they return."""

    def origins(self, record_ids: list[str]) -> dict[str, str]:
        """The origin (``<import id>/<item>``; "" when enrolled one by one) of each of these records
        the collection holds."""
        ...

    def upsert(self, records: list[tuple[str, list[float], dict[str, object]]]) -> None:
        """Store records (id, vector, payload), durably, in one write."""
        ...

    def nearest(self, vector: list[float], limit: int, score_threshold: float) -> list[ScoredRecord]:
        """The best-scoring records within the engine's score threshold, best first."""
        ...

    def count(self, subject_id: str | None = None) -> int:
        """How many records (of one subject, when given)."""
        ...

    def delete_subject(self, subject_id: str) -> list[str]:
        """Remove every record of a subject; returns the ids of those that went."""
        ...

    def delete_record(self, record_id: str) -> str | None:
        """Remove one record; returns its subject id, or None when it did not exist."""
        ...

    def page(self, after: str | None, limit: int) -> tuple[list[StoredRecord], str | None]:
        """Up to ``limit`` records in id order from the cursor ``after`` (None: the start), and
        the cursor of the next page (None after the last)."""
        ...

    def existing(self, record_ids: list[str]) -> set[str]:
        """Which of these records the collection holds."""
        ...

    def optimize(self) -> bool:
        """Compact and index what was written lately, blocking; False when nothing needed it."""
        ...

    def indexed(self) -> int:
        """How many vectors are indexed (have their int8 codes)."""
        ...

    def close(self) -> None:
        """Flush and release."""
        ...


class GalleryBackend(Protocol):
    """Where collections live: opened per model, listed at start."""

    def models(self) -> list[GalleryModel]:
        """The models that already have a collection."""
        ...

    def open(self, model: GalleryModel) -> VectorCollection:
        """The model's collection, created on first use; refuses one made for another model."""
        ...


def check_model(model: GalleryModel) -> GalleryModel:
    """Validate a model description before it names a collection."""
    if not SAFE_NAME.match(model.id) or not SAFE_NAME.match(model.version):
        raise InvalidInput(f"model id {model.id!r} or version {model.version!r} is not a safe collection name")
    if model.metric not in METRICS:
        raise PreconditionFailed(f"unsupported metric {model.metric!r}")
    return model


class GalleryIndex:
    """One model's gallery: enrol, search, delete, count."""

    def __init__(self, collection: VectorCollection, model: GalleryModel) -> None:
        self.model = model
        self._collection = collection
        self._write_lock = threading.Lock()
        #: When the last write landed, and whether the index has been optimized since.
        self.last_write = 0.0
        self.optimized = True

    def check(self, vector: list[float]) -> None:
        """Refuse a vector of another size than the model's."""
        if len(vector) != self.model.dimension:
            raise InvalidInput(f"vector has {len(vector)} dimensions; {self.model.id} has {self.model.dimension}")

    def enroll(
        self,
        subject_id: str,
        image_sha256: str,
        vector: list[float],
        metadata: Mapping[str, str],
        origin: str = "",
        image_ref: str = "",
    ) -> tuple[str, bool]:
        """Store one face; returns the record id and whether this call (or an earlier delivery of
        the same ``origin``, an import's item) created it. Durable on return."""
        return self.enroll_many([Enrolment(subject_id, image_sha256, vector, dict(metadata), origin, image_ref)])[0]

    def enroll_many(self, enrolments: list[Enrolment]) -> list[tuple[str, bool]]:
        """Store faces in one write (one disk sync); for each, in order, the record id and whether
        it was created by it (or by an earlier delivery of its ``origin``). A photo already held, or
        named twice in the group, is stored once; the first of the group to name it creates it.
        Durable on return."""
        for record in enrolments:
            self.check(record.vector)
        if not enrolments:
            return []
        ids = [record_id_for(record.subject_id, record.image_sha256) for record in enrolments]
        now = int(time.time())
        outcomes: list[tuple[str, bool]] = []
        new: dict[str, tuple[str, list[float], dict[str, object]]] = {}
        with self._write_lock:
            held = self._collection.origins(list(dict.fromkeys(ids)))
            for record_id, record in zip(ids, enrolments, strict=True):
                if record_id in held:
                    outcomes.append((record_id, bool(record.origin) and held[record_id] == record.origin))
                    continue
                held[record_id] = record.origin
                new[record_id] = (record_id, record.vector, self._payload(record, now))
                outcomes.append((record_id, True))
            if new:
                self._collection.upsert(list(new.values()))
                self._wrote()
        return outcomes

    def _payload(self, record: Enrolment, enrolled_at: int) -> dict[str, object]:
        return {
            "origin": record.origin,
            "image_ref": record.image_ref,
            "subject_id": record.subject_id,
            "image_sha256": record.image_sha256,
            "model_id": self.model.id,
            "model_version": self.model.version,
            "enrolled_at": enrolled_at,
            "source": record.metadata.get("source", ""),
            "status": "active",
            "metadata": dict(record.metadata),
        }

    def _wrote(self) -> None:
        self.last_write = time.monotonic()
        self.optimized = False

    def optimize(self) -> bool:
        """Index what was written since the last run (the embedded backend's int8 codes); enrolments
        wait meanwhile, searches do not. Searches are exact either way."""
        with self._write_lock:
            self.optimized = True
            return self._collection.optimize()

    def search(self, vector: list[float], limit: int, max_distance: float) -> list[Hit]:
        """The best record of each of up to ``limit`` subjects within ``max_distance``, nearest first."""
        self.check(vector)
        cosine = self.model.metric == "cosine"
        threshold = (1.0 - max_distance) if cosine else max_distance
        # Several photos of one subject can crowd the top. Fetch more records until `limit`
        # distinct subjects are found or the records within the threshold run out, so a subject
        # is never dropped just because another has many photos.
        fetch = limit * 4
        while True:
            scored = self._collection.nearest(vector, fetch, threshold)
            hits: list[Hit] = []
            seen: set[str] = set()
            for record in scored:
                if record.subject_id in seen:
                    continue
                seen.add(record.subject_id)
                distance = (1.0 - record.score) if cosine else record.score
                hits.append(Hit(record_id=record.record_id, subject_id=record.subject_id, distance=float(distance)))
                if len(hits) == limit:
                    return hits
            if len(scored) < fetch or fetch >= MAX_FETCH:
                return hits
            fetch = min(fetch * 4, MAX_FETCH)

    def delete_subject(self, subject_id: str) -> list[str]:
        """Remove every record of a subject; durable on return. Returns the ids of those that went."""
        with self._write_lock:
            self._wrote()
            return self._collection.delete_subject(subject_id)

    def delete_record(self, record_id: str) -> str | None:
        """Remove one record (one photo of a subject); durable on return. Returns its subject id."""
        with self._write_lock:
            self._wrote()
            return self._collection.delete_record(record_id)

    def count(self, subject_id: str | None = None) -> int:
        """How many records the collection holds (of one subject, when given)."""
        return self._collection.count(subject_id)

    def _missing_pages(
        self, other: GalleryIndex, after: str | None, size: int
    ) -> Iterator[tuple[list[StoredRecord], str | None]]:
        """Page by page from the cursor ``after``: the records of the page that ``other`` lacks,
        and the cursor after the page (None after the last)."""
        cursor = after
        while True:
            page, cursor = self._collection.page(cursor, size)
            held = other._collection.existing([record.record_id for record in page]) if page else set()
            yield [record for record in page if record.record_id not in held], cursor
            if cursor is None:
                return

    def missing_from(self, other: GalleryIndex, after: str | None, limit: int) -> tuple[list[StoredRecord], str | None]:
        """Records of this collection that ``other`` lacks, reading from the cursor ``after``:
        about ``limit`` of them, and the cursor to continue from (None when the scan is done)."""
        missing: list[StoredRecord] = []
        cursor = after
        for found, following in self._missing_pages(other, after, limit):
            missing += found
            cursor = following
            if len(missing) >= limit:
                break
        return missing, cursor

    def unmatched_in(self, other: GalleryIndex, excused: set[str], sample: int = 5) -> tuple[int, list[str]]:
        """How many records of this collection ``other`` lacks, excused ones aside, with a few of
        their ids. Enrolments into this collection wait meanwhile, so none lands unseen."""
        with self._write_lock:
            unmatched = [
                record.record_id
                for found, _ in self._missing_pages(other, None, 1000)
                for record in found
                if record.record_id not in excused
            ]
        return len(unmatched), unmatched[:sample]

    def indexed(self) -> int:
        """How many of them are indexed (the others are scanned in float32)."""
        return self._collection.indexed()

    def close(self) -> None:
        """Flush and release the collection."""
        with self._write_lock:
            self._collection.close()


class Gallery:
    """Every model's collection in one backend."""

    def __init__(self, backend: GalleryBackend) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self._indexes = {model.id: GalleryIndex(backend.open(model), model) for model in backend.models()}

    @overload
    def index_for(self, model: GalleryModel) -> GalleryIndex: ...

    @overload
    def index_for(self, model: GalleryModel, create: bool) -> GalleryIndex | None: ...

    def index_for(self, model: GalleryModel, create: bool = True) -> GalleryIndex | None:
        """The collection for a model, created on first use unless ``create`` is false (then None
        when there is none yet); a version mismatch is refused either way."""
        check_model(model)
        with self._lock:
            index = self._indexes.get(model.id)
            if index is None:
                if not create:
                    return None
                index = self._indexes[model.id] = GalleryIndex(self._backend.open(model), model)
            elif index.model != model:
                raise PreconditionFailed(
                    f"gallery {model.id} holds version {index.model.version} ({index.model.dimension}-d "
                    f"{index.model.metric}); refusing version {model.version}"
                )
            return index

    def index_to_search(self, model: GalleryModel) -> GalleryIndex | None:
        """The collection a search with ``model`` reads: None while the gallery is empty; refused
        when the gallery holds only other models' vectors, so a search never silently misses."""
        index = self.index_for(model, create=False)
        if index is None and self._indexes:
            held = ", ".join(sorted(f"{i.model.id} {i.model.version}" for i in self._indexes.values()))
            raise PreconditionFailed(
                f"the gallery holds vectors of {held}; model {model.id} {model.version} has none: "
                "enrol or re-embed the gallery with it first"
            )
        return index

    def optimize_settled(self, quiet_s: float) -> int:
        """Optimize every index written to and then left alone for ``quiet_s``; returns how many."""
        due = [
            index
            for index in self.all_indexes()
            if not index.optimized and time.monotonic() - index.last_write >= quiet_s
        ]
        for index in due:
            index.optimize()
        return len(due)

    def all_indexes(self) -> list[GalleryIndex]:
        """Every collection."""
        return list(self._indexes.values())

    def close(self) -> None:
        """Flush and close every collection."""
        for index in self._indexes.values():
            index.close()
        self._indexes.clear()

"""The server backend: a Qdrant server or cluster through qdrant-client.

Collections are named ``candor_<model id>_<version>`` and carry the model in their metadata;
shard number and replication factor are set when a collection is created, with a write consistency
factor equal to the replication factor: a write (an expunged record above all) returns only once
every copy has applied it (``wait=True``). Search uses the embedded backend's settings (see
`candor_matcher.edge_backend`): no HNSW graph, int8 codes in RAM scanned in full on every shard,
the shortlist rescored with the original vectors.
"""

from __future__ import annotations

from dataclasses import asdict

from qdrant_client import QdrantClient, models

from candor_kit.errors import PreconditionFailed
from candor_matcher.edge_backend import OVERSAMPLING
from candor_matcher.gallery import INDEXED_FIELDS, RECORD_FIELDS, GalleryModel, ScoredRecord, StoredRecord, check_model

PREFIX = "candor_"
_DISTANCE = {"euclidean": models.Distance.EUCLID, "cosine": models.Distance.COSINE}
_SCHEMA = {"keyword": models.PayloadSchemaType.KEYWORD, "integer": models.PayloadSchemaType.INTEGER}
_SEARCH = models.SearchParams(quantization=models.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING))


def _subject(subject_id: str) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key="subject_id", match=models.MatchValue(value=subject_id))])


class ServerCollection:
    """One model's collection on the server."""

    def __init__(self, client: QdrantClient, name: str) -> None:
        self._client = client
        self._name = name

    def origins(self, record_ids: list[str]) -> dict[str, str]:
        """The origin of each of these records the collection holds."""
        found = self._client.retrieve(self._name, record_ids, with_payload=["origin"], with_vectors=False)
        return {str(p.id): str((p.payload or {}).get("origin", "")) for p in found}

    def upsert(self, records: list[tuple[str, list[float], dict[str, object]]]) -> None:
        """Store records in one request; returns once the server has applied them."""
        points = [
            models.PointStruct(id=record_id, vector=vector, payload=payload) for record_id, vector, payload in records
        ]
        self._client.upsert(self._name, points, wait=True)

    def nearest(self, vector: list[float], limit: int, score_threshold: float) -> list[ScoredRecord]:
        """Nearest records within the score threshold."""
        points = self._client.query_points(
            self._name,
            query=vector,
            limit=limit,
            score_threshold=score_threshold,
            with_payload=["subject_id"],
            search_params=_SEARCH,
        ).points
        return [ScoredRecord(str(p.id), float(p.score), str((p.payload or {}).get("subject_id", ""))) for p in points]

    def count(self, subject_id: str | None = None) -> int:
        """How many records (of one subject, when given)."""
        return int(
            self._client.count(self._name, count_filter=_subject(subject_id) if subject_id else None, exact=True).count
        )

    def delete_subject(self, subject_id: str) -> list[str]:
        """Remove a subject's records from every replica before returning; returns their ids."""
        ids: list[str] = []
        cursor: models.ExtendedPointId | None = None
        while True:
            records, cursor = self._client.scroll(
                self._name, scroll_filter=_subject(subject_id), limit=1000, offset=cursor, with_payload=False
            )
            ids.extend(str(record.id) for record in records)
            if cursor is None:
                break
        if ids:
            # By the filter, not the ids: a record enrolled since the scroll goes too.
            self._client.delete(
                self._name, points_selector=models.FilterSelector(filter=_subject(subject_id)), wait=True
            )
        return ids

    def delete_record(self, record_id: str) -> str | None:
        """Remove one record before returning; returns its subject id."""
        found = self._client.retrieve(self._name, [record_id], with_payload=["subject_id"], with_vectors=False)
        if not found:
            return None
        self._client.delete(self._name, points_selector=models.PointIdsList(points=[record_id]), wait=True)
        return str((found[0].payload or {}).get("subject_id", ""))

    def page(self, after: str | None, limit: int) -> tuple[list[StoredRecord], str | None]:
        """Records in id order from the cursor ``after``, and the next page's cursor."""
        records, following = self._client.scroll(
            self._name, limit=limit, offset=after, with_payload=RECORD_FIELDS, with_vectors=False
        )
        found = [StoredRecord.from_payload(str(record.id), record.payload) for record in records]
        return found, (str(following) if following is not None else None)

    def existing(self, record_ids: list[str]) -> set[str]:
        """Which of these records the collection holds."""
        found = self._client.retrieve(self._name, record_ids, with_payload=False, with_vectors=False)
        return {str(record.id) for record in found}

    def optimize(self) -> bool:
        """Nothing to do: the server's optimizers index in the background."""
        return False

    def indexed(self) -> int:
        """How many vectors the server has indexed (quantized)."""
        return int(self._client.get_collection(self._name).indexed_vectors_count or 0)

    def close(self) -> None:
        """Nothing to flush: the server owns durability."""


class QdrantServerBackend:
    """Collections on a Qdrant server or cluster."""

    def __init__(self, client: QdrantClient, shard_number: int = 1, replication_factor: int = 1) -> None:
        self._client = client
        self._shards = shard_number
        self._replicas = replication_factor

    @staticmethod
    def collection_name(model: GalleryModel) -> str:
        """``candor_<model id>_<version>``."""
        return f"{PREFIX}{model.id}_{model.version}"

    def models(self) -> list[GalleryModel]:
        """Models with a Candor collection on the server."""
        found = []
        for collection in self._client.get_collections().collections:
            if collection.name.startswith(PREFIX):
                metadata = self._client.get_collection(collection.name).config.metadata or {}
                if "candor_model" in metadata:
                    found.append(GalleryModel(**metadata["candor_model"]))
        return found

    def open(self, model: GalleryModel) -> ServerCollection:
        """The model's collection, created with its payload indexes on first use."""
        check_model(model)
        name = self.collection_name(model)
        if self._client.collection_exists(name):
            metadata = self._client.get_collection(name).config.metadata or {}
            stored = metadata.get("candor_model")
            if stored is None or GalleryModel(**stored) != model:
                raise PreconditionFailed(f"collection {name} was not made for {model.id} {model.version}")
            return ServerCollection(self._client, name)
        self._client.create_collection(
            name,
            vectors_config=models.VectorParams(size=model.dimension, distance=_DISTANCE[model.metric]),
            shard_number=self._shards,
            replication_factor=self._replicas,
            write_consistency_factor=self._replicas,
            hnsw_config=models.HnswConfigDiff(m=0, ef_construct=100, full_scan_threshold=10_000),
            quantization_config=models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
            ),
            metadata={"candor_model": asdict(model)},
        )
        for field, kind in INDEXED_FIELDS.items():
            self._client.create_payload_index(name, field, _SCHEMA[kind], wait=True)
        return ServerCollection(self._client, name)

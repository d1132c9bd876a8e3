"""The photo store: every enrolled photo and every retained probe, encrypted at rest in a
JetStream object store that every gateway replica shares.

An object is named ``gallery/<record id>`` or ``probe/<search id>``. Its description holds a JSON
header (what it is, its SHA-256, when it was stored, the face's box, the subject, where it came
from) in the clear, so sweeps and listings need no decryption; its content is a 12-byte nonce and
the AES-256-GCM ciphertext of the photo, with the header as associated data, so neither the photo
nor its header can be altered unnoticed. The key is 32 random bytes, base64, in a secret file
(``candor secrets init`` makes one). Only the gateway holds the key and may use the bucket.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import replace as replace_fields
from typing import Any, Literal, get_args

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.js import JetStreamContext
from nats.js.api import Header, ObjectInfo, ObjectMeta, ObjectMetaOptions, ObjectStoreConfig, StorageType
from nats.js.errors import APIError, NotFoundError, ObjectNotFoundError
from nats.js.kv import MSG_ROLLUP_SUBJECT
from nats.js.object_store import (
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_META_PRE_TEMPLATE,
    OBJ_STREAM_TEMPLATE,
    ObjectStore,
)

from candor.common.v1 import common_pb2
from candor.gateway.v1 import gateway_pb2
from candor_gateway.blind import blind_key
from candor_kit import Bus
from candor_kit.errors import InvalidInput, PreconditionFailed, ServiceUnavailable
from candor_kit.jetstream_setup import set_up
from candor_kit.subjects import PHOTOS_BUCKET

NONCE_BYTES = 12
#: The largest chunk a photo is stored in (the bus's message limit permitting). nats-py's default,
#: 128 KiB, made a 2.3 MB photo 19 acknowledged publishes; most photos are one chunk at this size.
CHUNK_BYTES = 1 << 20
#: How many times a read (or a delete) starts again on the newer photo when the one it was reading
#: was replaced.
READ_ATTEMPTS = 3
#: JetStream's error code for a write whose expected last sequence is no longer the last.
WRONG_LAST_SEQUENCE = 10071
#: What a photo is kept as: a gallery record's photo, a search's probe, or the candidate photo of a
#: proficiency test (under its search id; never in the gallery).
Kind = Literal["gallery", "probe", "exemplar"]
KEY = re.compile(r"^[0-9a-f-]{36}$")
log = structlog.get_logger("candor.gateway.photos")


def box_dict(box: common_pb2.Box) -> dict[str, int]:
    """A face box as a header (and an audit record) keeps it."""
    return {"x": box.x, "y": box.y, "width": box.width, "height": box.height}


def eye_list(face: common_pb2.DetectedFace) -> list[list[float]] | None:
    """A face's eye centres as a header keeps them; None when the detector gave none."""
    return [[round(point.x, 1), round(point.y, 1)] for point in face.eyes] if len(face.eyes) == 2 else None


@dataclass(frozen=True)
class PhotoHeader:
    """What is known of a stored photo without decrypting it."""

    kind: Kind
    #: The record id (gallery) or the search id (probe).
    key: str
    sha256: str
    stored_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    #: The chosen face's box in the photo, {x, y, width, height}; None when not known.
    face_box: dict[str, int] | None = None
    subject_id: str = ""
    #: Where it came from: "enroll" or "<import id>/<item>" (gallery), "search" (probe).
    origin: str = ""
    #: The chosen face's two eye centres, [[x, y], [x, y]], the image's left first; None when not
    #: known (stored before eyes were kept, or imported: found when the photo is shown).
    eyes: list[list[float]] | None = None
    #: The enrolment's metadata (source, booking details...), sealed like the photo: base64 of a
    #: nonce and its AES-256-GCM ciphertext, bound to this photo's name; "" when there is none.
    metadata_sealed: str = ""

    @property
    def name(self) -> str:
        """The object's name in the bucket."""
        return object_name(self.kind, self.key)

    @property
    def stored(self) -> dt.datetime:
        """When it was stored."""
        return dt.datetime.fromisoformat(self.stored_at)

    def box(self) -> common_pb2.Box | None:
        """The face box as a message, or None."""
        return common_pb2.Box(**self.face_box) if self.face_box else None

    def eye_points(self) -> list[common_pb2.Point]:
        """The eye centres as messages; empty when not known."""
        return [common_pb2.Point(x=x, y=y) for x, y in self.eyes or ()]

    def encoded(self) -> str:
        """The header as its object's description (and the ciphertext's associated data)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def decode(cls, text: str) -> PhotoHeader:
        """Parse a description; ValueError when it is not a photo header."""
        try:
            values: dict[str, Any] = json.loads(text)
            header = cls(**values)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a photo header: {exc}") from exc
        if header.kind not in get_args(Kind):
            raise ValueError(f"not a photo kind: {header.kind!r}")
        # Retention compares it with the time now: a time with no zone (or none at all) would
        # make that comparison fail for every probe after it.
        try:
            stored = dt.datetime.fromisoformat(header.stored_at)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a photo header: stored_at {header.stored_at!r} is not a time") from exc
        if stored.utcoffset() is None:
            raise ValueError(f"not a photo header: stored_at {header.stored_at!r} names no time zone")
        return header


def object_name(kind: Kind, key: str) -> str:
    """``gallery/<record id>``, ``probe/<search id>`` or ``exemplar/<search id>``; InvalidInput for
    anything else."""
    if not KEY.match(key):
        raise InvalidInput("not a record or search id")
    return f"{kind}/{key}"


@dataclass(frozen=True)
class Photo:
    """A decrypted photo and its header."""

    header: PhotoHeader
    image: bytes
    #: The enrolment's metadata, opened.
    metadata: dict[str, str] = field(default_factory=dict)

    def message(
        self,
        face_box: common_pb2.Box | None = None,
        search_id: str = "",
        eyes: Sequence[common_pb2.Point] = (),
    ) -> gateway_pb2.Photo:
        """The photo as the API returns it: with the stored face box and eyes unless given, its
        record (a gallery photo) or search (a probe, or the search it is shown for), where it came
        from and when it was stored."""
        gallery = self.header.kind == "gallery"
        message = gateway_pb2.Photo(
            image=self.image,
            sha256=self.header.sha256,
            face_box=face_box or self.header.box(),
            record_id=self.header.key if gallery else "",
            search_id=search_id or ("" if gallery else self.header.key),
            subject_id=self.header.subject_id,
            eyes=list(eyes) or self.header.eye_points(),
            origin=self.header.origin,
            metadata=self.metadata,
        )
        message.stored_at.FromDatetime(self.header.stored)
        return message


class PhotoStore:
    """Encrypted photos in the CANDOR_PHOTOS object store."""

    def __init__(self, key: bytes, bucket: str = PHOTOS_BUCKET) -> None:
        self._aead = AESGCM(key)
        #: The key of score-blind review's candidate order, shared by every replica like the photos.
        self.blind_key = blind_key(key)
        self._bucket_name = bucket
        #: The bucket and the JetStream context its chunks are read through, once ``open``.
        self._opened: tuple[ObjectStore, JetStreamContext] | None = None
        self._chunk_bytes = CHUNK_BYTES

    async def open(self, bus: Bus, replicas: int = 1) -> None:
        """Bind to the bucket, creating it (file storage, ``replicas`` copies) on first use."""
        # Room for the chunk's subject and headers within the server's limit.
        self._chunk_bytes = max(64 << 10, min(CHUNK_BYTES, bus.max_payload - (4 << 10)))
        config = ObjectStoreConfig(
            description="Candor's encrypted gallery photos and retained probes",
            storage=StorageType.FILE,
            replicas=replicas,
        )
        # One made by another replica with other settings is used as it is.
        bucket = await set_up(
            f"the object store {self._bucket_name}",
            lambda: bus.jetstream.create_object_store(self._bucket_name, config),
            lambda: bus.jetstream.object_store(self._bucket_name),
        )
        self._opened = (bucket, bus.jetstream)

    @property
    def bucket_name(self) -> str:
        """The object store's name."""
        return self._bucket_name

    @property
    def bucket(self) -> ObjectStore:
        """The bound bucket; ServiceUnavailable before ``open``."""
        return self._open()[0]

    def _open(self) -> tuple[ObjectStore, JetStreamContext]:
        if self._opened is None:
            raise ServiceUnavailable("the photo store is not open yet")
        return self._opened

    async def put(
        self, header: PhotoHeader, image: bytes, *, replace: bool = True, metadata: Mapping[str, str] | None = None
    ) -> bool:
        """Encrypt and store a photo (and its enrolment's ``metadata``, sealed in its header); with
        ``replace`` False, keep one already stored under its name. Returns whether it was written."""
        if not replace and await self.header(header.kind, header.key) is not None:
            return False
        if metadata:
            header = replace_fields(header, metadata_sealed=self._seal_metadata(header.name, metadata))
        description = header.encoded()
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, image, description.encode())
        options = ObjectMetaOptions(max_chunk_size=self._chunk_bytes)
        await self.bucket.put(
            header.name, sealed, meta=ObjectMeta(name=header.name, description=description, options=options)
        )
        return True

    async def header(self, kind: Kind, key: str) -> PhotoHeader | None:
        """The stored photo's header, or None when none is stored."""
        try:
            info = await self.bucket.get_info(object_name(kind, key))
        except (ObjectNotFoundError, NotFoundError):
            return None
        return PhotoHeader.decode(info.description or "")

    async def get(self, kind: Kind, key: str) -> Photo | None:
        """The decrypted photo, or None when none is stored; PreconditionFailed when the object
        was altered or another key made it."""
        name = object_name(kind, key)
        stored = await self._read(name)
        if stored is None:
            return None
        info, data = stored
        description = info.description or ""
        try:
            header = PhotoHeader.decode(description)
            image = self._aead.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], description.encode())
        except (ValueError, InvalidTag) as exc:
            raise PreconditionFailed(
                f"the stored photo {name} fails its integrity check (altered, or another key)"
            ) from exc
        if header.name != name:
            raise PreconditionFailed(f"the stored photo {name} carries the header of {header.name}")
        return Photo(header, image, self._open_metadata(header))

    async def _read(self, name: str) -> tuple[ObjectInfo, bytes] | None:
        """An object's info and stored bytes, or None when none is stored.

        nats-py's ``ObjectStore.get`` waits for the chunks on a consumer with no end, so a read
        that a delete or a replacement overtakes (their old chunks purged after the info was read)
        waits for ever: for the caller's whole deadline, or without end where there is none. Here
        each chunk is asked for, and a purged one is an answer: the info is read again, and says
        the photo was deleted (None) or replaced (the newer one is read)."""
        for _ in range(READ_ATTEMPTS):
            try:
                info = await self.bucket.get_info(name)
            except (ObjectNotFoundError, NotFoundError):
                return None
            data = await self._chunks(info)
            if data is not None:
                return info, data
        raise ServiceUnavailable(
            f"the stored photo {name} was replaced {READ_ATTEMPTS} times while it was read; try again"
        )

    async def _chunks(self, info: ObjectInfo) -> bytes | None:
        """An object's chunks in order, each read on its own from the bucket's stream (the
        leader's copy, so a photo just stored is found); None when one is gone."""
        if info.is_link():
            raise PreconditionFailed(f"the stored photo {info.name} is a link, which Candor never stores")
        jetstream = self._open()[1]
        stream = OBJ_STREAM_TEMPLATE.format(bucket=self._bucket_name)
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self._bucket_name, obj=info.nuid)
        parts: list[bytes] = []
        sequence = 1
        for _ in range(info.chunks or 0):
            try:
                chunk = await jetstream.get_msg(stream, seq=sequence, subject=subject, next=True)
            except NotFoundError:
                return None
            parts.append(chunk.data or b"")
            sequence = chunk.seq + 1
        return b"".join(parts)

    def _seal_metadata(self, name: str, metadata: Mapping[str, str]) -> str:
        nonce = os.urandom(NONCE_BYTES)
        text = json.dumps(dict(metadata), sort_keys=True).encode()
        return base64.b64encode(nonce + self._aead.encrypt(nonce, text, f"{name}/metadata".encode())).decode()

    def _open_metadata(self, header: PhotoHeader) -> dict[str, str]:
        """The sealed metadata of a photo; PreconditionFailed when it was altered."""
        if not header.metadata_sealed:
            return {}
        try:
            sealed = base64.b64decode(header.metadata_sealed, validate=True)
            text = self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], f"{header.name}/metadata".encode())
            opened = json.loads(text)
        except (ValueError, InvalidTag) as exc:
            raise PreconditionFailed(f"the metadata of {header.name} fails its integrity check") from exc
        return {str(k): str(v) for k, v in opened.items()} if isinstance(opened, dict) else {}

    async def delete(self, kind: Kind, key: str) -> bool:
        """Delete a photo (its chunks are purged); False when none was stored.

        Of deletes racing for one photo (two expunges of a subject at once, two replicas), exactly
        one deletes it and says so, and the counts that go into their audit records add up.
        nats-py's ``ObjectStore.delete`` cannot tell: each that read the info before another's
        delete marker landed writes one too and returns as if it had deleted the photo. Here the
        marker is written only over the info this delete read (compare-and-set on the meta
        subject's last sequence); one that finds it gone or deleted meanwhile says False."""
        jetstream = self._open()[1]
        stream = OBJ_STREAM_TEMPLATE.format(bucket=self._bucket_name)
        meta = OBJ_META_PRE_TEMPLATE.format(
            bucket=self._bucket_name, obj=base64.urlsafe_b64encode(object_name(kind, key).encode()).decode()
        )
        for _ in range(READ_ATTEMPTS):
            try:
                last = await jetstream.get_last_msg(stream, meta)
                info = ObjectInfo.from_response(json.loads(last.data or b"{}"))
            except NotFoundError:
                return False
            if not info.deleted:
                marker = {**info.as_dict(), "deleted": True, "size": 0, "chunks": 0, "digest": "", "mtime": ""}
                headers = {Header.ROLLUP: MSG_ROLLUP_SUBJECT, Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(last.seq)}
                try:
                    await jetstream.publish(meta, json.dumps(marker).encode(), headers=headers)
                except APIError as exc:
                    if exc.err_code == WRONG_LAST_SEQUENCE:  # replaced or deleted meanwhile: read again
                        continue
                    raise
            # Its chunks go whoever wrote the marker: a delete cut off after it leaves none behind.
            if info.nuid:
                chunks = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=self._bucket_name, obj=info.nuid)
                await jetstream.purge_stream(stream, subject=chunks)
            return not info.deleted
        raise ServiceUnavailable(
            f"the stored photo {kind}/{key} was replaced {READ_ATTEMPTS} times while it was deleted; try again"
        )

    async def read_headers(
        self, kind: Kind, where: Callable[[PhotoHeader], bool] | None = None
    ) -> tuple[list[PhotoHeader], list[str]]:
        """Every stored photo of a kind (deleted ones left out; only those ``where`` keeps, when
        given): the headers that can be read, and the names of those that cannot (each logged), so
        that one cannot stop a sweep of the others, nor go unnoticed by it.

        The objects are read as they stream past and only what is kept is held: nats-py's
        ``list`` holds every object's info of the whole bucket at once (about 3 kB each, so
        gigabytes at a million gallery photos, on every sweep for probes too)."""
        watcher = await self.bucket.watch(ignore_deletes=True)
        found: list[PhotoHeader] = []
        unreadable: list[str] = []
        try:
            async for info in watcher:
                if info is None:  # the end of what is stored now
                    break
                if info.deleted or not (info.name or "").startswith(f"{kind}/"):
                    continue
                try:
                    header = PhotoHeader.decode(info.description or "")
                except ValueError as exc:
                    log.warning("photo_header_unreadable", name=info.name, error=str(exc))
                    unreadable.append(info.name or "")
                    continue
                if where is None or where(header):
                    found.append(header)
        finally:
            await watcher.stop()
        return found, unreadable

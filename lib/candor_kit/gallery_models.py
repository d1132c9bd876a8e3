"""Which model the gallery searches with, and the one it is being re-embedded into.

One small record (``matcher.v1.GalleryModels``) in the CANDOR_GALLERY key-value bucket. The
matcher writes it, with compare-and-set, and checks every search and enrolment against it; the
gateway reads it to send a photo to the detectors and embedders of the right model. Switching the
gallery to a re-embedded model is one write of this record, so every search either uses the old
model's complete collection or the new one's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from candor.matcher.v1 import matcher_pb2
from candor_kit.bus import Bus
from candor_kit.errors import PreconditionFailed
from candor_kit.kv_entries import change_entry
from candor_kit.subjects import GALLERY_BUCKET
from candor_kit.tasks import cancel_and_wait

KEY = "models"


def decoded(value: bytes | None) -> matcher_pb2.GalleryModels:
    """The record from its stored bytes (none: the empty record, before the first enrolment)."""
    models = matcher_pb2.GalleryModels()
    models.ParseFromString(value or b"")
    return models


class GalleryModelsReader:
    """Reads the record for a service that does not write it (the gateway): one key-value read a
    call (`read`), or from memory for a search (`for_search`), once the matcher has made the bucket."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._record: GalleryModelsRecord | None = None

    async def read(self) -> matcher_pb2.GalleryModels:
        """The gallery's models as the bucket holds them now; empty before the first enrolment."""
        if self._record is None:
            try:
                self._record = GalleryModelsRecord(await self._bus.jetstream.key_value(GALLERY_BUCKET))
            except BucketNotFoundError:
                return matcher_pb2.GalleryModels()
        return (await self._record.read())[0]

    async def for_search(self) -> matcher_pb2.GalleryModels:
        """The record from memory, kept fresh by a watch (`GalleryModelsRecord.for_search`)."""
        if self._record is None:
            await self.read()
            if self._record is None:
                return matcher_pb2.GalleryModels()
        return await self._record.for_search()

    async def close(self) -> None:
        """Stop the watch, if one runs (at the service's stop)."""
        if self._record is not None:
            await self._record.close()


class GalleryModelsRecord:
    """The record, read and changed with compare-and-set."""

    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket
        self._watch: ModelsWatch | None = None

    async def for_search(self) -> matcher_pb2.GalleryModels:
        """The record as a search needs it: from memory, kept fresh by a watch of its key (started
        on first use), so a search does not wait on a key-value read. Writes through `change`
        reach the cache at once; others' within the watch's delivery."""
        if self._watch is None:
            self._watch = ModelsWatch(self._bucket)
        return await self._watch.current(self.read)

    async def close(self) -> None:
        """Stop the watch, if one runs (at the service's stop); a later search starts it again."""
        if self._watch is not None:
            await self._watch.close()

    async def read(self) -> tuple[matcher_pb2.GalleryModels, int]:
        """The record and its revision (0 when there is none yet)."""
        try:
            entry = await self._bucket.get(KEY)
        except KeyNotFoundError:
            return matcher_pb2.GalleryModels(), 0
        return decoded(entry.value), int(entry.revision or 0)

    async def change(
        self, edit: Callable[[matcher_pb2.GalleryModels], matcher_pb2.GalleryModels | None], attempts: int = 5
    ) -> matcher_pb2.GalleryModels:
        """Apply ``edit`` to the current record and store the result unless another writer got there
        first, in which case read again and retry. ``edit`` returns None to leave the record alone;
        it raises to refuse the change."""

        def edited(value: bytes | None) -> tuple[bytes | None, tuple[matcher_pb2.GalleryModels, bool]]:
            current = decoded(value)
            changed = edit(copy_of(current))
            if changed is None:
                return None, (current, False)
            changed.changed_at.GetCurrentTime()
            return changed.SerializeToString(), (changed, True)

        (models, written), revision = await change_entry(
            self._bucket, KEY, edited, tries=attempts, contended="the gallery's model record kept changing; retry"
        )
        if written and self._watch is not None:
            self._watch.saw(models, revision)
        return models


class ModelsWatch:
    """The record in memory, followed by a watch of its key (a JetStream ordered consumer that
    re-creates itself after a reconnect). While the watch is not running (not yet started, or
    ended by an error) each call reads the bucket, as before, and starts it again."""

    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket
        self._models: matcher_pb2.GalleryModels | None = None
        self._revision = 0
        self._task: asyncio.Task[None] | None = None

    async def current(
        self, read: Callable[[], Awaitable[tuple[matcher_pb2.GalleryModels, int]]]
    ) -> matcher_pb2.GalleryModels:
        """The record: from memory while the watch runs, else read (and the watch restarted)."""
        if self._task is not None and not self._task.done() and self._models is not None:
            return self._models
        models, revision = await read()
        self.saw(models, revision)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._follow(), name="gallery-models-watch")
        return models

    async def close(self) -> None:
        """End the watch's task and wait for it, so none is left pending when the service stops."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def saw(self, models: matcher_pb2.GalleryModels, revision: int) -> None:
        """Take a version of the record unless a newer one is held."""
        if revision >= self._revision:
            self._models, self._revision = models, revision

    async def _follow(self) -> None:
        watcher = await self._bucket.watch(KEY)
        try:
            async for entry in watcher:
                if entry is None:  # the end of what was there when the watch began
                    continue
                # A value, or a delete or purge marker (no record).
                models = decoded(entry.value) if entry.operation is None else matcher_pb2.GalleryModels()
                self.saw(models, int(entry.revision or 0))
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()


def copy_of(models: matcher_pb2.GalleryModels) -> matcher_pb2.GalleryModels:
    """A copy to edit, leaving the record read untouched."""
    copied = matcher_pb2.GalleryModels()
    copied.CopyFrom(models)
    return copied


def has(ref: object) -> bool:
    """Whether a ModelRef field is set (an unset one has no id)."""
    return bool(getattr(ref, "id", ""))


def check_search_model(models: matcher_pb2.GalleryModels, model_id: str) -> None:
    """Refuse a search with a model other than the active one."""
    if has(models.active) and model_id != models.active.id:
        raise PreconditionFailed(
            f"the gallery searches with {models.active.id} {models.active.version}; "
            f"a search with {model_id} is refused"
            + (" until the gallery is switched to it" if models.target.id == model_id else "")
        )


def check_enrol_model(models: matcher_pb2.GalleryModels, model_id: str) -> None:
    """Refuse an enrolment with a model that is neither active nor being re-embedded into."""
    if has(models.active) and model_id not in (models.active.id, models.target.id):
        raise PreconditionFailed(
            f"the gallery's model is {models.active.id} {models.active.version}; enrolling with {model_id} "
            "is refused (re-embed the gallery into it first)"
        )


def reembed_event_id(models: matcher_pb2.GalleryModels, step: str) -> str | None:
    """The one audit event id of a re-embedding's ``step`` ("begun", "started", "switched"), from
    the id the record names it by; None (a fresh id per record) for one begun before they were named."""
    return f"reembed/{models.reembed_id}.{step}" if models.reembed_id else None


def switched_by_its_reembedding(models: matcher_pb2.GalleryModels, model_id: str) -> bool:
    """Whether ``model_id`` is the active model by a named re-embedding's switch, with no other
    begun since: a switch to it sent again is then done already."""
    return not has(models.target) and models.active.id == model_id and bool(models.reembed_id)


__all__ = [
    "KEY",
    "GalleryModelsReader",
    "GalleryModelsRecord",
    "ModelsWatch",
    "check_enrol_model",
    "check_search_model",
    "copy_of",
    "decoded",
    "has",
    "reembed_event_id",
    "switched_by_its_reembedding",
]

"""The gallery's model record as searches read it: from memory, kept fresh by a watch of its key
on a real nats-server, never a key-value read a search once the watch runs."""

from __future__ import annotations

import asyncio
import uuid

import nats
from nats.js.kv import KeyValue

from candor.common.v1 import common_pb2
from candor.matcher.v1 import matcher_pb2
from candor_kit.gallery_models import GalleryModelsRecord


class CountingBucket:
    """The real bucket, counting the reads made through it."""

    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket
        self.reads = 0

    async def get(self, key: str) -> KeyValue.Entry:
        self.reads += 1
        return await self._bucket.get(key)

    def __getattr__(self, name: str) -> object:
        return getattr(self._bucket, name)


def _active(model_id: str) -> object:
    def edit(models: matcher_pb2.GalleryModels) -> matcher_pb2.GalleryModels:
        models.active.CopyFrom(common_pb2.ModelRef(id=model_id, version="1"))
        return models

    return edit


async def _eventually(record: GalleryModelsRecord, model_id: str, within_s: float = 5.0) -> float:
    """Seconds until ``record`` shows ``model_id`` as active."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while (await record.for_search()).active.id != model_id:
        assert loop.time() - started < within_s, f"the watch never showed {model_id}"
        await asyncio.sleep(0.005)
    return loop.time() - started


async def test_searches_read_the_record_from_memory_and_see_every_change(nats_url: str) -> None:
    connection = await nats.connect(nats_url)
    try:
        bucket = await connection.jetstream().create_key_value(bucket=f"GALLERY_{uuid.uuid4().hex[:8]}")
        writer = GalleryModelsRecord(bucket)  # the matcher, which writes the record
        counted = CountingBucket(bucket)
        reader = GalleryModelsRecord(counted)  # type: ignore[arg-type]  # another service's copy

        assert not (await reader.for_search()).active.id  # no record yet: empty
        await writer.change(_active("sface"))
        assert await _eventually(reader, "sface") < 2.0

        reads = counted.reads
        for _ in range(200):
            assert (await reader.for_search()).active.id == "sface"
        assert counted.reads == reads, "a search read the bucket while the watch runs"

        # The writer's own copy changes with its write, without waiting for the watch.
        assert (await writer.for_search()).active.id == "sface"
        await writer.change(_active("arcface"))
        assert (await writer.for_search()).active.id == "arcface"
        assert await _eventually(reader, "arcface") < 2.0

        # A deleted record reads as none.
        await bucket.delete("models")
        loop = asyncio.get_running_loop()
        started = loop.time()
        while (await reader.for_search()).active.id:
            assert loop.time() - started < 5.0, "the deletion never reached the watch"
            await asyncio.sleep(0.005)
        await reader.close()
        await writer.close()
    finally:
        await connection.close()


async def test_a_watch_that_ended_falls_back_to_reads_and_starts_again(nats_url: str) -> None:
    connection = await nats.connect(nats_url)
    try:
        bucket = await connection.jetstream().create_key_value(bucket=f"GALLERY_{uuid.uuid4().hex[:8]}")
        writer, counted = GalleryModelsRecord(bucket), CountingBucket(bucket)
        reader = GalleryModelsRecord(counted)  # type: ignore[arg-type]
        await writer.change(_active("sface"))
        await _eventually(reader, "sface")
        watch = reader._watch
        assert watch is not None and watch._task is not None
        watch._task.cancel()
        await asyncio.sleep(0.05)
        await writer.change(_active("arcface"))
        reads = counted.reads
        assert (await reader.for_search()).active.id == "arcface"  # read at once, not stale
        assert counted.reads == reads + 1
        await asyncio.sleep(0.2)  # the watch runs again: no further reads
        for _ in range(20):
            await reader.for_search()
        assert counted.reads == reads + 1
        await reader.close()
        await writer.close()
    finally:
        await connection.close()


async def test_a_closed_record_leaves_no_watch_running(nats_url: str) -> None:
    """A service stopping closes its record: the watch's task ends with it instead of staying
    pending on the loop (to be destroyed, still pending, when the loop goes)."""
    connection = await nats.connect(nats_url)
    try:
        bucket = await connection.jetstream().create_key_value(bucket=f"GALLERY_{uuid.uuid4().hex[:8]}")
        record = GalleryModelsRecord(bucket)
        await record.change(_active("sface"))
        others = asyncio.all_tasks()
        assert (await record.for_search()).active.id == "sface"
        watching = [t for t in asyncio.all_tasks() - others if t.get_name() == "gallery-models-watch"]
        assert len(watching) == 1 and not watching[0].done()
        await record.close()
        assert all(task.done() for task in watching)
        reads = CountingBucket(bucket)
        after = GalleryModelsRecord(reads)  # type: ignore[arg-type]
        await after.close()  # closing one never used is fine
    finally:
        await connection.close()

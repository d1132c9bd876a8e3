"""Compare-and-set changes of one key-value entry (candor_kit.kv_entries) against a real
nats-server: racing writers each count once, a lost race reads again, and a change that keeps
losing is refused as unavailable, never written over another's. And ``reach``: a call whose
bucket's stream does not answer for a while is tried again, for so long and no longer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
import pytest_asyncio
from nats.js.errors import KeyNotFoundError, NoStreamResponseError
from nats.js.kv import KeyValue

from candor_kit import kv_entries
from candor_kit.errors import ServiceUnavailable
from candor_kit.kv_entries import KeptChanging, change_entry, reach

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def bucket(nats_url: str) -> AsyncIterator[KeyValue]:
    client = await nats.connect(nats_url)
    name = f"KV_TEST_{uuid.uuid4().hex[:8]}"
    js = client.jetstream()
    yield await js.create_key_value(bucket=name)
    await js.delete_key_value(name)
    await client.close()


def plus_one(value: bytes | None) -> tuple[bytes | None, int]:
    count = int(value or b"0") + 1
    return str(count).encode(), count


async def test_racing_writers_each_count_once(bucket: KeyValue) -> None:
    answers = await asyncio.gather(
        *(change_entry(bucket, "count", plus_one, tries=50, contended="busy") for _ in range(20))
    )
    assert sorted(answer for answer, _ in answers) == list(range(1, 21))  # each saw its own count
    assert int((await bucket.get("count")).value or b"") == 20


class AnotherWriterAfterEachRead:
    """The real bucket, with another writer's write landing right after each of the first
    ``times`` reads: the change's write is then over a stale revision, as in a real race."""

    def __init__(self, bucket: KeyValue, times: int) -> None:
        self._bucket = bucket
        self.times = times

    async def get(self, key: str) -> KeyValue.Entry:
        entry = await self._bucket.get(key)
        if self.times:
            self.times -= 1
            await self._bucket.put(key, b"theirs")
        return entry

    async def update(self, key: str, value: bytes, last: int) -> int:
        return await self._bucket.update(key, value, last=last)

    async def create(self, key: str, value: bytes) -> int:
        return await self._bucket.create(key, value)


def appended(value: bytes | None) -> tuple[bytes | None, bytes | None]:
    return (value or b"") + b"+mine", value


async def test_a_lost_race_reads_again_and_one_that_keeps_losing_is_refused(bucket: KeyValue) -> None:
    await bucket.put("entry", b"first")
    racing = AnotherWriterAfterEachRead(bucket, times=2)
    with pytest.raises(KeptChanging) as lost:
        await change_entry(racing, "entry", appended, tries=2, contended="the entry kept changing")  # type: ignore[arg-type]
    assert isinstance(lost.value, ServiceUnavailable) and lost.value.message == "the entry kept changing"
    assert (await bucket.get("entry")).value == b"theirs"  # never written over another's

    racing.times = 1
    read, revision = await change_entry(racing, "entry", appended, tries=2, contended="x")  # type: ignore[arg-type]
    assert read == b"theirs" and (await bucket.get("entry")).value == b"theirs+mine"
    assert revision == (await bucket.get("entry")).revision


async def test_a_missing_entry_is_created_and_an_edit_that_leaves_it_writes_nothing(bucket: KeyValue) -> None:
    read, created = await change_entry(bucket, "new", appended, tries=1, contended="x")
    assert read is None and (await bucket.get("new")).value == b"+mine"
    left, revision = await change_entry(bucket, "new", lambda value: (None, value), tries=1, contended="x")
    assert left == b"+mine" and revision == created == (await bucket.get("new")).revision
    await bucket.delete("new")
    again, _ = await change_entry(bucket, "new", appended, tries=1, contended="x")
    assert again is None and (await bucket.get("new")).value == b"+mine"  # a deleted entry reads as none


def silent_for(bucket: KeyValue, failures: int, key: str) -> tuple[list[int], Callable[[], Awaitable[bytes | None]]]:
    """A read of ``key`` whose first ``failures`` tries fail as they do while the bucket's stream
    elects a leader (the fault injected round the real read), and the list its tries are counted in."""
    tries: list[int] = []

    async def read() -> bytes | None:
        tries.append(1)
        if len(tries) <= failures:
            raise NoStreamResponseError
        return (await bucket.get(key)).value

    return tries, read


async def test_reach_tries_a_silent_stream_again_until_it_answers(bucket: KeyValue) -> None:
    await bucket.put("reached", b"yes")
    tries, read = silent_for(bucket, 2, "reached")
    assert await reach(read, "the register cannot be reached") == b"yes"
    assert len(tries) == 3


async def test_reach_gives_up_when_the_stream_stays_silent(bucket: KeyValue, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv_entries, "REACH_WITHIN_S", 0.5)
    tries, read = silent_for(bucket, 1000, "reached")
    with pytest.raises(ServiceUnavailable, match=r"^the register cannot be reached: nats: no response from stream$"):
        await reach(read, "the register cannot be reached")
    assert 2 <= len(tries) <= 3, "pauses of 0.2 s doubling fit two or three tries in half a second"


async def test_reach_hands_the_buckets_own_answers_back_at_once(bucket: KeyValue) -> None:
    tries, read = silent_for(bucket, 0, f"never-{uuid.uuid4().hex}")
    with pytest.raises(KeyNotFoundError):
        await reach(read, "the register cannot be reached")
    assert len(tries) == 1

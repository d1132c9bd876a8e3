"""The matcher names an import's photos enrolled together in one audit event, each photo still named
(record, subject, photo hash, item), and the chain names each photo once: a photo delivered again
after its group's event was stored is named alone and kept as a repeat, a failed event fails only
its own photos, and no event outgrows the chain's limit. Real nats-server, the matcher's publisher,
the audit service's own consume loop into a real SQLite chain."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from candor_audit import AuditChain
from candor_audit.outside import AuditStreamCheck
from candor_audit.service import AuditLog
from candor_kit import AuditPublisher, Bus
from candor_kit.audit_events import AUDIT_STREAM, MAX_EVENT_BYTES
from candor_kit.audit_records import part_name
from candor_kit.ingest import _DELIVERY
from candor_matcher.naming import KIND, ImportNaming, NamedPhoto
from tests.unit.test_audit_consume import SIGNER, bus, nats_server, run_consumer, when

__all__ = ["bus", "nats_server"]  # the fixtures this module borrows


def photo(import_id: str, item: int, image_ref: str = "", user: str = "importer") -> NamedPhoto:
    """One enrolled photo of ``import_id``."""
    record = {
        "item": item,
        "subject_id": f"subject-{item}",
        "record_id": f"record-{item}",
        "created": True,
        "image_sha256": f"{item:064x}",
        "image_ref": image_ref or f"folder/{item}.jpg",
    }
    return NamedPhoto(import_id, item, user, ("sface", "2021dec"), record)


async def delivered_again(naming: ImportNaming, enrolled: NamedPhoto) -> None:
    """Name ``enrolled`` as the import worker does for an item delivered a second time."""
    _DELIVERY.set(2)  # this task's own context: the others stay first deliveries
    await naming.name(enrolled)


async def chain_of(bus: Bus, tmp_path: Path, records: int) -> AuditChain:
    """The audit service's consume loop run until the chain holds ``records`` records."""
    chain = AuditChain(tmp_path / "audit.sqlite3", SIGNER)
    done = asyncio.Event()
    watcher = asyncio.create_task(when(lambda: len(chain.query(limit=500)) >= records, done))
    try:
        await run_consumer(bus, AuditLog(chain, SIGNER), done)
    finally:
        watcher.cancel()
    return chain


async def test_photos_enrolled_together_are_named_in_one_event_and_a_redelivered_one_once(
    bus: Bus, tmp_path: Path
) -> None:
    naming = ImportNaming(AuditPublisher(bus, "matcher"), together=4)
    first = [photo("imp-aaaa1111", item) for item in range(4)]
    await asyncio.gather(*(naming.name(one) for one in first))
    # Photo 2 again (its worker died before acknowledging it), beside photos 4 and 5 of a first delivery.
    await asyncio.gather(
        delivered_again(naming, photo("imp-aaaa1111", 2)), *(naming.name(photo("imp-aaaa1111", n)) for n in (4, 5))
    )
    # Another import's photo and another user's never share an event with these.
    await asyncio.gather(naming.name(photo("imp-bbbb2222", 0)), naming.name(photo("imp-aaaa1111", 6, user="bob")))

    chain = await chain_of(bus, tmp_path, 4)
    records = chain.query(limit=500)
    named = [(r.entry.actor, json.loads(r.entry.details_json)) for r in records]
    assert all(r.entry.kind == KIND for r in records)
    assert [(actor, d["import_id"], [p["item"] for p in d["records"]]) for actor, d in named] == [
        ("importer", "imp-aaaa1111", [0, 1, 2, 3]),
        ("importer", "imp-aaaa1111", [4, 5]),
        ("importer", "imp-bbbb2222", [0]),
        ("bob", "imp-aaaa1111", [6]),
    ], "photo 2's second naming is a repeat, not a record"
    assert named[0][1]["records"][2] == photo("imp-aaaa1111", 2).record  # each photo still named in full
    assert named[0][1]["model"] == {"id": "sface", "version": "2021dec"}
    assert chain.named_parts([part_name(KIND, "imp-aaaa1111.2")]) == {
        part_name(KIND, "imp-aaaa1111.2"): records[0].sequence
    }
    assert chain.verify().ok
    # The check of the stream against the chain takes the repeat for held, not for a lost event.
    last = (await bus.jetstream.stream_info(AUDIT_STREAM)).state.last_seq

    async def settled_through() -> int:
        return int(last)

    check = AuditStreamCheck(bus.jetstream, settled_through)
    missing = await check.missing(
        lambda ids: asyncio.to_thread(chain.present, list(ids)),
        lambda parts: asyncio.to_thread(lambda: set(chain.named_parts(list(parts)))),
    )
    assert missing == ([], 0)
    chain.close()


async def test_a_failed_event_fails_its_own_photos_only(bus: Bus) -> None:
    stored: list[str] = []

    async def store(subject: str, event) -> bool:  # type: ignore[no-untyped-def]
        if json.loads(event.details_json)["import_id"] == "imp-broken1":
            raise ConnectionError("the audit stream did not answer")
        stored.append(event.event_id)
        return True

    naming = ImportNaming(AuditPublisher(bus, "matcher", store=store), together=64)
    outcomes = await asyncio.gather(
        naming.name(photo("imp-broken1", 0)), naming.name(photo("imp-fine0001", 0)), return_exceptions=True
    )
    assert isinstance(outcomes[0], ConnectionError) and outcomes[1] is None
    assert len(stored) == 1


async def test_no_event_outgrows_the_chains_limit(bus: Bus) -> None:
    sizes: list[int] = []

    async def store(subject: str, event) -> bool:  # type: ignore[no-untyped-def]
        sizes.append(event.ByteSize())
        return True

    naming = ImportNaming(AuditPublisher(bus, "matcher", store=store), together=64)
    # 64 photos whose references are 1,000 characters that JSON escapes (6 bytes each).
    await asyncio.gather(*(naming.name(photo("imp-longrefs", n, image_ref="é" * 1000)) for n in range(64)))
    assert len(sizes) > 1 and max(sizes) < MAX_EVENT_BYTES, sizes


async def test_photos_arriving_one_by_one_wait_for_each_other_but_a_full_group_does_not_wait(bus: Bus) -> None:
    events: list[list[int]] = []

    async def store(subject: str, event) -> bool:  # type: ignore[no-untyped-def]
        events.append([photo["item"] for photo in json.loads(event.details_json)["records"]])
        return True

    publisher = AuditPublisher(bus, "matcher", store=store)
    lingering = ImportNaming(publisher, together=4, linger_s=1.0)
    arriving = []
    for item in range(3):  # as the pipeline hands them on, 50 ms apart
        arriving.append(asyncio.create_task(lingering.name(photo("imp-pace0001", item))))
        await asyncio.sleep(0.05)
    await asyncio.gather(*arriving)
    assert events == [[0, 1, 2]]
    # A group as large as the worker's batch is stored at once: no more photos can join it.
    full = ImportNaming(publisher, together=2, linger_s=60.0)
    await asyncio.wait_for(asyncio.gather(*(full.name(photo("imp-full0001", n)) for n in range(2))), 5)
    assert events[-1] == [0, 1]

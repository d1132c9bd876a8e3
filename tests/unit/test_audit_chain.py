"""The hash chain detects any changed, deleted or reordered record, in SQLite and in a real
PostgreSQL server alike."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from candor.audit.v1 import audit_pb2
from candor_audit import AuditChain, PostgresAuditChain, SqlAuditChain
from candor_kit.audit_records import AuditEntry, entry_from_event, part_name, record_hash
from candor_kit.audit_signing import Checkpoint, Signer, record_message
from candor_kit.errors import InvalidInput, ServiceUnavailable
from tests.postgres import PostgresServer

SIGNER = Signer(Ed25519PrivateKey.generate())


def entry(n: int) -> AuditEntry:
    return AuditEntry(
        event_id=f"event-{n}",
        kind="search.completed",
        occurred_at=f"2026-11-28T10:00:{n:02d}.000000Z",
        actor="alice",
        case_number=f"CASE-{n % 2}",
        purpose="investigation",
        trace_id="0" * 32,
        details_json='{"candidates":[]}',
    )


@pytest.fixture(params=["sqlite", "postgres"])
def empty_chain(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlAuditChain]:
    """A new chain on each backend: a SQLite file, or a fresh database on the PostgreSQL server."""
    if request.param == "sqlite":
        chain: SqlAuditChain = AuditChain(tmp_path / "audit.db", SIGNER)
    else:
        chain = PostgresAuditChain(request.getfixturevalue("postgres_database"), SIGNER)
    yield chain
    chain.close()


@pytest.fixture
def chain(empty_chain: SqlAuditChain) -> SqlAuditChain:
    for n in range(1, 6):
        empty_chain.append(entry(n), f"2026-11-28T10:00:{n:02d}.500000Z")
    return empty_chain


def tamper(chain: SqlAuditChain, sql: str) -> None:
    """Change the table behind the service's back, as someone with database access could."""
    db = chain._connect()
    try:
        db.execute(sql)
    finally:
        db.close()


def test_untouched_chain_verifies(chain: SqlAuditChain) -> None:
    result = chain.verify()
    assert result.ok and result.records_checked == 5
    assert result.head_hash == chain.query()[-1].record_hash


def test_redelivered_event_is_stored_once(chain: SqlAuditChain) -> None:
    assert chain.append(entry(3), "2026-11-28T11:00:00.000000Z") is None
    assert chain.verify().records_checked == 5


def test_an_id_held_under_another_kind_is_no_repeat_so_no_service_silences_another(chain: SqlAuditChain) -> None:
    # The matcher's user knows a search's id and takes first the id a reviewer's analysis of it will
    # have, for an event of its own kind; the gateway's event under that id is still stored.
    taken = "search-9/analysis/rita"
    squat = replace(entry(6), event_id=taken, kind="matcher.searched")
    analysis = replace(entry(7), event_id=taken, kind="review.analysed")
    assert chain.append(squat, "2026-11-28T10:00:06.500000Z") is not None
    stored = chain.append(analysis, "2026-11-28T10:00:07.500000Z")
    assert stored is not None and stored.sequence == 7
    assert chain.append(analysis, "2026-11-28T10:00:08.500000Z") is None  # its own repeat still is one
    batch = chain.append_many(
        [(replace(squat, kind="probe.deleted"), "t"), (replace(squat, kind="probe.deleted"), "t")]
    )
    assert [record.sequence if record else None for record in batch] == [8, None]
    assert chain.present([("review.analysed", taken), ("search.completed", taken)]) == {("review.analysed", taken)}
    assert chain.verify().ok and chain.verify().records_checked == 8


def reopened(chain: SqlAuditChain) -> SqlAuditChain:
    """The same database opened again, as an audit service starting on it does."""
    chain.close()
    if isinstance(chain, AuditChain):
        return AuditChain(chain._path, SIGNER)
    return PostgresAuditChain(chain._dsn, SIGNER)  # type: ignore[attr-defined]


def test_a_chain_from_when_ids_were_unique_over_all_kinds_takes_one_again_under_another_kind(
    chain: SqlAuditChain,
) -> None:
    # The rule as the chain had it, on each backend: a unique index (SQLite) or constraint of the
    # column's UNIQUE (PostgreSQL's default name) over the event id alone.
    tamper(chain, "DROP INDEX audit_record_event")
    if isinstance(chain, AuditChain):
        tamper(chain, "CREATE UNIQUE INDEX audit_record_old_ids ON audit_record (event_id)")
    else:
        tamper(chain, "ALTER TABLE audit_record ADD CONSTRAINT audit_record_event_id_key UNIQUE (event_id)")
    with pytest.raises(Exception, match=r"(?i)unique"):  # the old rule holds: an id once over all kinds
        tamper(
            chain,
            "INSERT INTO audit_record SELECT 99, event_id, 'review.analysed', occurred_at, recorded_at, actor, "
            "case_number, purpose, trace_id, details_json, previous_hash, record_hash, key_id, signature "
            "FROM audit_record WHERE sequence = 1",
        )
    chain = reopened(chain)
    try:
        again = chain.append(replace(entry(1), kind="review.analysed"), "2026-11-28T10:00:06.500000Z")
        assert again is not None and again.sequence == 6
        assert chain.append(entry(2), "2026-11-28T10:00:07.500000Z") is None
        assert chain.verify().ok and chain.verify().records_checked == 6
    finally:
        chain.close()


def named(event_id: str, parts: list[str], kind: str = "gallery.import_enrolled") -> AuditEntry:
    """An event naming ``parts`` together, as the matcher names an import's photos."""
    return AuditEntry(
        event_id=event_id,
        kind=kind,
        occurred_at="2026-11-28T10:01:00.000000Z",
        actor="importer",
        case_number="",
        purpose="",
        trace_id="",
        details_json=json.dumps({"records": [{"item": part} for part in parts], "parts": parts}),
    )


def first_naming(chain: SqlAuditChain, part: str) -> int | None:
    """The sequence of the record that names ``part`` of the matcher's import events."""
    name = part_name("gallery.import_enrolled", part)
    return chain.named_parts([name]).get(name)


def test_an_event_whose_every_part_is_named_is_a_repeat_and_not_stored(chain: SqlAuditChain) -> None:
    group = chain.append(named("group-1", ["imp.1", "imp.2", "imp.3"]), "2026-11-28T10:01:00.100000Z")
    assert group is not None and group.sequence == 6
    # Photo 2 delivered again after its group's event was stored: named alone, under its part.
    assert chain.append(named("alone-2", ["imp.2"]), "2026-11-28T10:02:00.000000Z") is None
    assert chain.append(named("alone-2", ["imp.2"]), "2026-11-28T10:02:01.000000Z") is None  # and again
    assert first_naming(chain, "imp.2") == 6
    # The same part under another kind is another service's: not a repeat.
    other = chain.append(named("other-2", ["imp.2"], kind="matcher.noted"), "2026-11-28T10:03:00.000000Z")
    assert other is not None and other.sequence == 7
    assert chain.verify().ok and chain.verify().records_checked == 7


def test_a_group_naming_a_part_again_is_kept_and_its_new_parts_are_named_by_it(chain: SqlAuditChain) -> None:
    chain.append(named("alone-1", ["imp.1"]), "2026-11-28T10:01:00.100000Z")
    both = chain.append(named("group-12", ["imp.1", "imp.2"]), "2026-11-28T10:01:00.200000Z")
    assert both is not None and both.sequence == 7  # photo 2 is named only here: the event is kept
    assert first_naming(chain, "imp.1") == 6
    assert first_naming(chain, "imp.2") == 7


def test_repeats_within_one_batch_are_folded_in_order(empty_chain: SqlAuditChain) -> None:
    at = "2026-11-28T10:01:00.000000Z"
    events = [named("group-1", ["imp.1", "imp.2"]), named("alone-1", ["imp.1"]), named("alone-3", ["imp.3"])]
    stored = empty_chain.append_many([(event, at) for event in events])
    assert [record.sequence if record else None for record in stored] == [1, None, 2]


def test_a_row_slipped_into_the_index_of_named_parts_fails_verification(chain: SqlAuditChain) -> None:
    chain.append(named("group-1", ["imp.1", "imp.2"]), "2026-11-28T10:01:00.100000Z")
    assert chain.verify().ok
    # Someone with database access claims photo 3 named, so that its event would be taken for a repeat.
    tamper(chain, "INSERT INTO audit_part (name, sequence) VALUES ('part:gallery.import_enrolled/imp.3', 6)")
    result = chain.verify()
    assert not result.ok and result.first_bad_sequence == 6
    assert "names part:gallery.import_enrolled/imp.3, which it does not list" in result.problem


def test_an_event_listing_parts_that_are_not_ids_is_refused() -> None:
    for details in ('{"parts": "imp.1"}', '{"parts": []}', '{"parts": [1]}', '{"parts": ["' + "x" * 201 + '"]}'):
        event = audit_pb2.AuditEvent(event_id="e", kind="gallery.import_enrolled", details_json=details)
        event.occurred_at.GetCurrentTime()
        with pytest.raises(InvalidInput, match="parts"):
            entry_from_event(event)


def test_edited_record_is_named(chain: SqlAuditChain) -> None:
    tamper(chain, "UPDATE audit_record SET actor = 'mallory' WHERE sequence = 3")
    result = chain.verify()
    assert not result.ok
    assert result.first_bad_sequence == 3
    assert "altered" in result.problem


def test_deleted_record_is_named(chain: SqlAuditChain) -> None:
    tamper(chain, "DELETE FROM audit_record WHERE sequence = 2")
    result = chain.verify()
    assert not result.ok and result.first_bad_sequence == 2
    assert "missing" in result.problem


def test_reordered_records_are_detected(chain: SqlAuditChain) -> None:
    tamper(chain, "UPDATE audit_record SET sequence = -sequence WHERE sequence IN (2, 4)")
    tamper(chain, "UPDATE audit_record SET sequence = 4 WHERE sequence = -2")
    tamper(chain, "UPDATE audit_record SET sequence = 2 WHERE sequence = -4")
    result = chain.verify()
    assert not result.ok and result.first_bad_sequence == 2


def test_query_filters_by_case_and_time(chain: SqlAuditChain) -> None:
    assert [r.sequence for r in chain.query(case_number="CASE-1")] == [1, 3, 5]
    assert [
        r.sequence for r in chain.query(since="2026-11-28T10:00:02.000000Z", until="2026-11-28T10:00:04.000000Z")
    ] == [2, 3]
    assert chain.query(actor="bob") == []


def test_query_selects_any_of_several_events_or_cases(chain: SqlAuditChain) -> None:
    def sequences(**filters: Any) -> list[int]:
        return [r.sequence for r in chain.query(**filters)]

    assert sequences(event_ids=["event-5", "event-2", "event-9"]) == [2, 5]
    assert sequences(event_id="event-1", event_ids=["event-4"]) == [1, 4]
    assert sequences(case_numbers=["CASE-0"]) == [2, 4]
    assert sequences(case_number="CASE-1", case_numbers=["CASE-0"]) == [1, 2, 3, 4, 5]
    assert sequences(case_numbers=["CASE-1"], event_ids=["event-2", "event-3"]) == [3]  # both must hold


def test_chain_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    chain = AuditChain(tmp_path / "a.db", SIGNER)
    assert chain._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert chain._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def write_together(chain: SqlAuditChain, write: Callable[[SqlAuditChain, int], None]) -> None:
    """``write(chain, 100)`` and, at the same time, ``write(twin, 200)`` on a second connection to the
    same database (two audit replicas, say)."""
    second = (
        AuditChain(chain._path, SIGNER)  # type: ignore[attr-defined]
        if isinstance(chain, AuditChain)
        else PostgresAuditChain(chain._dsn, SIGNER)  # type: ignore[attr-defined]
    )
    writers = [threading.Thread(target=write, args=(c, start)) for c, start in ((chain, 100), (second, 200))]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    second.close()


def test_concurrent_appenders_keep_one_linear_chain(empty_chain: SqlAuditChain) -> None:
    """Two writers (two audit replicas on one database, say) never fork the chain."""

    def write(chain: SqlAuditChain, first: int) -> None:
        for n in range(first, first + 20):
            chain.append(entry(n), f"2026-11-28T10:01:{n % 60:02d}.000000Z")

    write_together(empty_chain, write)
    result = empty_chain.verify()
    assert result.ok and result.records_checked == 40


def test_concurrent_batch_appenders_keep_one_linear_chain(empty_chain: SqlAuditChain) -> None:
    """Two replicas appending batches at once interleave whole batches, never fork the chain."""

    def write(chain: SqlAuditChain, first: int) -> None:
        for start in range(first, first + 40, 8):
            chain.append_many([(entry(n), "2026-11-28T10:02:00.000000Z") for n in range(start, start + 8)])

    write_together(empty_chain, write)
    result = empty_chain.verify()
    assert result.ok and result.records_checked == 80
    order = [int(record.entry.event_id.removeprefix("event-")) for record in empty_chain.query()]
    runs = [order[i : i + 8] for i in range(0, 80, 8)]
    assert all(run == list(range(run[0], run[0] + 8)) for run in runs), "a batch was split by another"


def test_a_batch_keeps_its_order_and_stores_an_event_held_or_repeated_once(chain: SqlAuditChain) -> None:
    """Each entry of a batch is its own record, in the order given; an event id the chain holds,
    or that came earlier in the same batch (a redelivery), gets None and no second record."""
    at = "2026-11-28T10:03:00.000000Z"
    outcomes = chain.append_many([(entry(7), at), (entry(2), at), (entry(8), at), (entry(7), at), (entry(9), at)])
    assert [o.sequence if o else None for o in outcomes] == [6, None, 7, None, 8]
    records = chain.query()
    assert [r.entry.event_id for r in records[5:]] == ["event-7", "event-8", "event-9"]
    assert [r.record_hash for r in records[5:]] == [o.record_hash for o in outcomes if o]
    assert chain.append_many([(entry(2), at)]) == [None]
    result = chain.verify()
    assert result.ok and result.records_checked == 8 and result.signatures_checked == 8


class FailingSigner(Signer):
    """The audit key, failing once, at its ``fail_at``-th signature (a fault partway through a
    batch, as a database gone away would be)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(SIGNER._key)
        self._left = fail_at

    def sign(self, message: bytes) -> str:
        self._left -= 1
        if self._left == 0:
            raise RuntimeError("the signing key could not be used")
        return super().sign(message)


def test_a_batch_that_fails_partway_stores_none_of_it(chain: SqlAuditChain) -> None:
    """All or none: a batch whose third record cannot be signed leaves the chain as it was, and
    the same batch appended again (the events redelivered) goes in whole."""
    at = "2026-11-28T10:04:00.000000Z"
    batch = [(entry(n), at) for n in range(20, 25)]
    good = chain._signer
    chain._signer = FailingSigner(fail_at=3)
    with pytest.raises(RuntimeError, match="signing key"):
        chain.append_many(batch)
    chain._signer = good
    assert len(chain.query()) == 5
    assert [o.sequence for o in chain.append_many(batch) if o] == [6, 7, 8, 9, 10]
    assert chain.verify().ok


def rewrite_tail(chain: SqlAuditChain, keep: int, signer: Signer | None) -> None:
    """Cut the chain after record ``keep`` and append a fresh, self-consistent tail by hand, signed
    with ``signer`` (an insider who holds the key) or not signed at all (anyone with database access)."""
    tamper(chain, f"DELETE FROM audit_record WHERE sequence > {keep}")
    previous = chain.query()[-1].record_hash
    for sequence in range(keep + 1, keep + 4):
        forged = entry(90 + sequence)
        recorded_at = "2026-11-28T12:00:00.000000Z"
        digest = record_hash(previous, sequence, forged, recorded_at)
        key = signer.key_id if signer else ""
        signature = signer.sign(record_message(sequence, digest)) if signer else ""
        values = (
            sequence, forged.event_id, forged.kind, forged.occurred_at, recorded_at, forged.actor,
            forged.case_number, forged.purpose, forged.trace_id, forged.details_json, previous, digest, key, signature,
        )  # fmt: skip
        tamper(chain, "INSERT INTO audit_record VALUES (" + ", ".join(f"'{v}'" for v in values) + ")")
        previous = digest


def test_every_record_is_signed_by_the_audit_key(chain: SqlAuditChain) -> None:
    result = chain.verify()
    assert result.ok and result.signatures_checked == 5
    assert all(record.key_id == SIGNER.key_id and record.signature for record in chain.query())


def test_a_tail_rewritten_without_the_key_is_caught_by_its_signatures(chain: SqlAuditChain) -> None:
    rewrite_tail(chain, keep=2, signer=None)
    result = chain.verify()
    assert not result.ok and result.first_bad_sequence == 3
    assert "signature" in result.problem


def test_a_tail_rewritten_with_the_key_is_caught_by_a_checkpoint(chain: SqlAuditChain) -> None:
    checkpoint = chain.checkpoint("2026-11-28T11:00:00.000000Z")
    assert checkpoint is not None and checkpoint.sequence == 5
    rewrite_tail(chain, keep=2, signer=SIGNER)  # an insider with the key: hashes and signatures all valid
    result = chain.verify()
    assert not result.ok and result.first_bad_sequence == 5
    assert "checkpoint" in result.problem


def test_a_kept_checkpoint_still_catches_a_rewrite_when_the_stored_ones_are_gone(chain: SqlAuditChain) -> None:
    kept = chain.checkpoint("2026-11-28T11:00:00.000000Z")
    assert kept is not None
    rewrite_tail(chain, keep=3, signer=SIGNER)
    tamper(chain, "DELETE FROM audit_checkpoint")
    assert chain.verify().ok  # without the kept checkpoint nothing shows
    result = chain.verify([kept])
    assert not result.ok and result.first_bad_sequence == 5


def test_a_cut_tail_is_caught_by_a_checkpoint(chain: SqlAuditChain) -> None:
    chain.checkpoint("2026-11-28T11:00:00.000000Z")
    tamper(chain, "DELETE FROM audit_record WHERE sequence > 3")
    result = chain.verify()
    assert not result.ok and result.first_bad_sequence == 4
    assert "tail cut" in result.problem


def test_a_forged_checkpoint_is_refused(chain: SqlAuditChain) -> None:
    made = chain.checkpoint("2026-11-28T11:00:00.000000Z")
    assert made is not None
    forged = Checkpoint(made.sequence, "f" * 64, made.made_at, made.key_id, made.signature)
    result = chain.verify([forged])
    assert not result.ok and result.first_bad_sequence == 5
    assert "no valid signature" in result.problem


def test_a_checkpoint_is_made_once_per_head(chain: SqlAuditChain) -> None:
    first = chain.checkpoint("2026-11-28T11:00:00.000000Z")
    again = chain.checkpoint("2026-11-28T11:05:00.000000Z")
    assert first == again
    chain.append(entry(6), "2026-11-28T11:06:00.000000Z")
    moved = chain.checkpoint("2026-11-28T11:07:00.000000Z")
    assert moved is not None and moved.sequence == 6
    result = chain.verify()
    assert result.ok and result.checkpoints_checked == 2


def test_a_chain_from_before_signatures_gains_the_columns_and_fails_verification(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    legacy = sqlite3.connect(path)
    legacy.execute(
        "CREATE TABLE audit_record (sequence INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, "
        "occurred_at TEXT NOT NULL, recorded_at TEXT NOT NULL, actor TEXT NOT NULL, case_number TEXT NOT NULL, "
        "purpose TEXT NOT NULL, trace_id TEXT NOT NULL, details_json TEXT NOT NULL, previous_hash TEXT NOT NULL, "
        "record_hash TEXT NOT NULL)"
    )
    first = entry(1)
    digest = record_hash("0" * 64, 1, first, "2026-01-01T00:00:00.000000Z")
    legacy.execute(
        "INSERT INTO audit_record VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (first.event_id, first.kind, first.occurred_at, "2026-01-01T00:00:00.000000Z", first.actor,
         first.case_number, first.purpose, first.trace_id, first.details_json, "0" * 64, digest),
    )  # fmt: skip
    legacy.commit()
    legacy.close()
    chain = AuditChain(path, SIGNER)
    result = chain.verify()
    assert not result.ok and result.first_bad_sequence == 1 and "signature" in result.problem
    # Its event ids are now unique for their kind, not over all kinds.
    assert chain.append(replace(first, kind="review.analysed"), "2026-01-01T00:00:01.000000Z") is not None
    assert chain.append(first, "2026-01-01T00:00:02.000000Z") is None
    assert [record.sequence for record in chain.query()] == [1, 2]
    indexes = {row[1] for row in chain._connect().execute("PRAGMA index_list(audit_record)")}
    assert {"audit_record_event", "audit_record_case", "audit_record_kind"} <= indexes  # made again
    chain.close()


def test_a_query_page_stops_by_size_and_says_more_so_any_volume_is_read_by_paging(tmp_path: Path) -> None:
    from candor_audit.answers import PAGE_BYTES, page_of

    chain = AuditChain(tmp_path / "big.db", Signer(Ed25519PrivateKey.generate()))
    big = "x" * 60_000  # near the 64 KiB an event may hold
    for n in range(150):
        chain.append(
            AuditEntry(
                f"e{n}", "model.calibrated", "2026-12-01T00:00:00.000000Z", "op", "", "", "", f'{{"b":"{big}"}}'
            ),
            "2026-12-01T00:00:01.000000Z",
        )
    pages, after = [], 0
    while True:
        page = page_of(chain.query(limit=1001, after=after), 1000)
        pages.append(page)
        assert page.ByteSize() <= PAGE_BYTES + 70_000
        if not page.more:
            break
        after = page.records[-1].sequence
    assert len(pages) >= 2 and sum(len(p.records) for p in pages) == 150
    assert [r.sequence for p in pages for r in p.records] == list(range(1, 151))
    chain.close()


def test_the_chain_comes_back_after_its_postgresql_server_restarts() -> None:
    """An outage of the audit database (the scale-out run stops PostgreSQL for 30 s): while it lasts,
    appends and reads fail as unavailable (the audit service retries the event), and once it is
    back the same chain appends and verifies again, with nothing lost or doubled."""
    server = PostgresServer()
    try:
        chain = PostgresAuditChain(server.new_database(), SIGNER)
        chain.append(entry(1), "2026-11-28T10:00:01.500000Z")
        server.pause()
        with pytest.raises(ServiceUnavailable, match="audit database"):
            chain.append(entry(2), "2026-11-28T10:00:02.500000Z")
        with pytest.raises(ServiceUnavailable, match="audit database"):
            chain.verify()
        with pytest.raises(ServiceUnavailable, match="audit database"):
            chain.checkpoint("2026-11-28T10:00:02.600000Z")
        server.resume()
        assert chain.append(entry(2), "2026-11-28T10:00:02.700000Z") is not None
        assert chain.append(entry(2), "2026-11-28T10:00:02.800000Z") is None  # a redelivery: not doubled
        assert chain.checkpoint("2026-11-28T10:00:03.000000Z") is not None
        verdict = chain.verify()
        assert verdict.ok and verdict.records_checked == 2
        chain.close()
    finally:
        server.stop()


def test_audit_replicas_starting_together_on_a_new_database_both_start(postgres_server: PostgresServer) -> None:
    """Two audit replicas started at once on an empty database (the scale-out topology's first
    start) each create the schema if it is missing; PostgreSQL's CREATE ... IF NOT EXISTS is not
    safe against a concurrent twin, so the creation must be serialised."""

    def start(dsn: str, ready: threading.Barrier, failures: list[BaseException]) -> None:
        ready.wait()
        try:
            PostgresAuditChain(dsn, SIGNER).close()
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever a replica died of
            failures.append(exc)

    for _ in range(5):
        dsn, ready, failures = postgres_server.new_database(), threading.Barrier(4), []
        threads = [threading.Thread(target=start, args=(dsn, ready, failures)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures

"""The hash chain detects any changed, deleted or reordered record, in SQLite and in a real
PostgreSQL server alike."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from candor_audit import AuditChain, AuditEntry, PostgresAuditChain, SqlAuditChain


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
        chain: SqlAuditChain = AuditChain(tmp_path / "audit.db")
    else:
        chain = PostgresAuditChain(request.getfixturevalue("postgres_database"))
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


def test_chain_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    chain = AuditChain(tmp_path / "a.db")
    assert chain._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert chain._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_concurrent_appenders_keep_one_linear_chain(empty_chain: SqlAuditChain) -> None:
    """Two writers (two audit replicas on one database, say) never fork the chain."""
    second = (
        AuditChain(empty_chain._path)  # type: ignore[attr-defined]
        if isinstance(empty_chain, AuditChain)
        else PostgresAuditChain(empty_chain._dsn)  # type: ignore[attr-defined]
    )

    def write(chain: SqlAuditChain, first: int) -> None:
        for n in range(first, first + 20):
            chain.append(entry(n), f"2026-11-28T10:01:{n % 60:02d}.000000Z")

    writers = [threading.Thread(target=write, args=(c, start)) for c, start in ((empty_chain, 100), (second, 200))]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    second.close()
    result = empty_chain.verify()
    assert result.ok and result.records_checked == 40

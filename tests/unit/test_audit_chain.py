"""The hash chain detects any changed, deleted or reordered record."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from candor_audit import AuditChain, AuditEntry


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


@pytest.fixture
def chain(tmp_path: Path) -> AuditChain:
    chain = AuditChain(tmp_path / "audit.db")
    for n in range(1, 6):
        chain.append(entry(n), f"2026-11-28T10:00:{n:02d}.500000Z")
    return chain


def tamper(chain_path: Path, sql: str) -> None:
    db = sqlite3.connect(chain_path)
    db.execute(sql)
    db.commit()
    db.close()


def test_untouched_chain_verifies(chain: AuditChain) -> None:
    result = chain.verify()
    assert result.ok and result.records_checked == 5
    assert result.head_hash == chain.query()[-1].record_hash


def test_redelivered_event_is_stored_once(chain: AuditChain) -> None:
    assert chain.append(entry(3), "2026-11-28T11:00:00.000000Z") is None
    assert chain.verify().records_checked == 5


def test_edited_record_is_named(chain: AuditChain, tmp_path: Path) -> None:
    tamper(tmp_path / "audit.db", "UPDATE audit_record SET actor = 'mallory' WHERE sequence = 3")
    result = chain.verify()
    assert not result.ok
    assert result.first_bad_sequence == 3
    assert "altered" in result.problem


def test_deleted_record_is_named(chain: AuditChain, tmp_path: Path) -> None:
    tamper(tmp_path / "audit.db", "DELETE FROM audit_record WHERE sequence = 2")
    result = chain.verify()
    assert not result.ok and result.first_bad_sequence == 2
    assert "missing" in result.problem


def test_reordered_records_are_detected(chain: AuditChain, tmp_path: Path) -> None:
    tamper(tmp_path / "audit.db", "UPDATE audit_record SET sequence = -sequence WHERE sequence IN (2, 4)")
    tamper(tmp_path / "audit.db", "UPDATE audit_record SET sequence = 4 WHERE sequence = -2")
    tamper(tmp_path / "audit.db", "UPDATE audit_record SET sequence = 2 WHERE sequence = -4")
    result = chain.verify()
    assert not result.ok and result.first_bad_sequence == 2


def test_query_filters_by_case_and_time(chain: AuditChain) -> None:
    assert [r.sequence for r in chain.query(case_number="CASE-1")] == [1, 3, 5]
    assert [
        r.sequence for r in chain.query(since="2026-11-28T10:00:02.000000Z", until="2026-11-28T10:00:04.000000Z")
    ] == [2, 3]
    assert chain.query(actor="bob") == []


def test_chain_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    chain = AuditChain(tmp_path / "a.db")
    assert chain._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert chain._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL

"""The audit chain: an append-only, hash-chained log in SQLite (WAL, full sync).

Each record's hash is SHA-256 over the previous record's hash and the record's canonical JSON,
so changing, deleting or reordering any record breaks verification at that record.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GENESIS_HASH = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_record (
    sequence      INTEGER PRIMARY KEY,
    event_id      TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,
    occurred_at   TEXT NOT NULL,
    recorded_at   TEXT NOT NULL,
    actor         TEXT NOT NULL,
    case_number   TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    trace_id      TEXT NOT NULL,
    details_json  TEXT NOT NULL,
    previous_hash TEXT NOT NULL,
    record_hash   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_record_case ON audit_record (case_number, sequence);
CREATE INDEX IF NOT EXISTS audit_record_actor ON audit_record (actor, sequence);
CREATE INDEX IF NOT EXISTS audit_record_occurred ON audit_record (occurred_at);
"""


@dataclass(frozen=True)
class AuditEntry:
    """The content of one event, as the chain hashes it. Times are RFC 3339 UTC strings."""

    event_id: str
    kind: str
    occurred_at: str
    actor: str
    case_number: str
    purpose: str
    trace_id: str
    details_json: str


@dataclass(frozen=True)
class StoredRecord:
    """An entry with its place in the chain."""

    sequence: int
    entry: AuditEntry
    recorded_at: str
    previous_hash: str
    record_hash: str


@dataclass(frozen=True)
class Verification:
    """The outcome of walking the chain."""

    ok: bool
    records_checked: int
    first_bad_sequence: int = 0
    problem: str = ""
    head_hash: str = GENESIS_HASH


def record_hash(previous_hash: str, sequence: int, entry: AuditEntry, recorded_at: str) -> str:
    """SHA-256 over the previous hash and the record's canonical JSON."""
    body: dict[str, Any] = {"sequence": sequence, "recorded_at": recorded_at, **asdict(entry)}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(previous_hash.encode("ascii") + b"\n" + canonical.encode("utf-8")).hexdigest()


class AuditChain:
    """The SQLite-backed chain. Appends are serialised; reads use their own connection."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()
        self._db = self._connect()
        self._db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def append(self, entry: AuditEntry, recorded_at: str) -> StoredRecord | None:
        """Append an entry; returns None when its event id is already in the chain."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._db.execute("SELECT 1 FROM audit_record WHERE event_id = ?", (entry.event_id,)).fetchone():
                    self._db.execute("ROLLBACK")
                    return None
                last = self._db.execute(
                    "SELECT sequence, record_hash FROM audit_record ORDER BY sequence DESC LIMIT 1"
                ).fetchone()
                sequence, previous = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
                digest = record_hash(previous, sequence, entry, recorded_at)
                self._db.execute(
                    "INSERT INTO audit_record VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        sequence,
                        entry.event_id,
                        entry.kind,
                        entry.occurred_at,
                        recorded_at,
                        entry.actor,
                        entry.case_number,
                        entry.purpose,
                        entry.trace_id,
                        entry.details_json,
                        previous,
                        digest,
                    ),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return StoredRecord(sequence, entry, recorded_at, previous, digest)

    def verify(self) -> Verification:
        """Walk the whole chain and report the first record that does not check out."""
        db = self._connect()
        try:
            expected_sequence, previous, checked = 1, GENESIS_HASH, 0
            for row in db.execute(f"SELECT {_COLUMNS} FROM audit_record ORDER BY sequence"):
                record = _row_to_record(row)
                if record.sequence != expected_sequence:
                    return Verification(
                        False, checked, expected_sequence, f"record {expected_sequence} is missing", previous
                    )
                if record.previous_hash != previous:
                    return Verification(
                        False,
                        checked,
                        record.sequence,
                        "previous-hash link is broken (record removed or reordered)",
                        previous,
                    )
                recomputed = record_hash(previous, record.sequence, record.entry, record.recorded_at)
                if recomputed != record.record_hash:
                    return Verification(False, checked, record.sequence, "record content was altered", previous)
                previous = record.record_hash
                expected_sequence += 1
                checked += 1
            return Verification(True, checked, head_hash=previous)
        finally:
            db.close()

    def query(
        self, case_number: str = "", actor: str = "", since: str = "", until: str = "", limit: int = 1000
    ) -> list[StoredRecord]:
        """Records filtered by case, actor and occurrence time (RFC 3339), oldest first."""
        clauses, params = [], []
        for column, value, op in (
            ("case_number", case_number, "="),
            ("actor", actor, "="),
            ("occurred_at", since, ">="),
            ("occurred_at", until, "<"),
        ):
            if value:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        db = self._connect()
        try:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM audit_record {where} ORDER BY sequence LIMIT ?", (*params, limit)
            ).fetchall()
        finally:
            db.close()
        return [_row_to_record(row) for row in rows]

    def close(self) -> None:
        """Close the writer connection."""
        with self._lock:
            self._db.close()


_COLUMNS = (
    "sequence, event_id, kind, occurred_at, actor, case_number, purpose, trace_id, details_json, "
    "recorded_at, previous_hash, record_hash"
)


def _row_to_record(row: tuple[Any, ...]) -> StoredRecord:
    return StoredRecord(
        sequence=row[0],
        entry=AuditEntry(*row[1:9]),
        recorded_at=row[9],
        previous_hash=row[10],
        record_hash=row[11],
    )

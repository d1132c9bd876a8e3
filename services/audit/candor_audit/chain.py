"""The audit chain: an append-only, hash-chained log in SQLite (WAL, full sync) or PostgreSQL.

Each record's hash is SHA-256 over the previous record's hash and the record's canonical JSON,
so changing, deleting or reordering any record breaks verification at that record. Both backends
share the SQL, the append protocol (one appender at a time, a redelivered event stored once) and
the verification walk; they differ in how they connect and how they take the writer's lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GENESIS_HASH = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_record (
    sequence      BIGINT PRIMARY KEY,
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


class SqlAuditChain:
    """The chain over a DB-API connection. Subclasses connect and take the writer's lock."""

    #: The driver's parameter marker, and the type of the sequence column.
    marker = "?"
    sequence_type = "BIGINT"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._db = self._connect()
        for statement in filter(str.strip, _SCHEMA.replace("BIGINT", self.sequence_type).split(";")):
            self._db.execute(statement)

    def _connect(self) -> Any:
        raise NotImplementedError

    def _begin_exclusive(self, db: Any) -> None:
        """Open a transaction that no other appender can enter until it ends."""
        raise NotImplementedError

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.marker)

    def append(self, entry: AuditEntry, recorded_at: str) -> StoredRecord | None:
        """Append an entry; returns None when its event id is already in the chain."""
        with self._lock:
            self._begin_exclusive(self._db)
            try:
                if self._db.execute(
                    self._sql("SELECT 1 FROM audit_record WHERE event_id = ?"), (entry.event_id,)
                ).fetchone():
                    self._db.execute("ROLLBACK")
                    return None
                last = self._db.execute(
                    "SELECT sequence, record_hash FROM audit_record ORDER BY sequence DESC LIMIT 1"
                ).fetchone()
                sequence, previous = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
                digest = record_hash(previous, sequence, entry, recorded_at)
                self._db.execute(
                    self._sql(f"INSERT INTO audit_record ({_INSERT_COLUMNS}) VALUES ({', '.join('?' * 12)})"),
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

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Any]:
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    def verify(self) -> Verification:
        """Walk the whole chain and report the first record that does not check out."""
        with self._reader() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM audit_record ORDER BY sequence")
            return verify_records(_row_to_record(row) for row in rows)

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
        with self._reader() as db:
            statement = self._sql(f"SELECT {_COLUMNS} FROM audit_record {where} ORDER BY sequence LIMIT ?")
            rows = db.execute(statement, (*params, limit)).fetchall()
        return [_row_to_record(row) for row in rows]

    def close(self) -> None:
        """Close the writer connection."""
        with self._lock:
            self._db.close()


class AuditChain(SqlAuditChain):
    """The chain in one SQLite file: WAL, and every commit synced to disk."""

    # INTEGER PRIMARY KEY is SQLite's 64-bit rowid.
    sequence_type = "INTEGER"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        super().__init__()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _begin_exclusive(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")


class PostgresAuditChain(SqlAuditChain):
    """The chain in a PostgreSQL table. Appenders queue on a table lock; readers never wait.

    Several audit replicas may point at one database: the lock keeps the chain linear.
    """

    marker = "%s"

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        super().__init__()

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)

    def _begin_exclusive(self, db: Any) -> None:
        db.execute("BEGIN")
        # Conflicts with itself and with every write, not with plain reads.
        db.execute("LOCK TABLE audit_record IN SHARE ROW EXCLUSIVE MODE")


def verify_records(records: Iterator[StoredRecord] | Any) -> Verification:
    """Check each record's sequence, link and hash in order; name the first that fails."""
    expected_sequence, previous, checked = 1, GENESIS_HASH, 0
    for record in records:
        if record.sequence != expected_sequence:
            return Verification(False, checked, expected_sequence, f"record {expected_sequence} is missing", previous)
        if record.previous_hash != previous:
            problem = "previous-hash link is broken (record removed or reordered)"
            return Verification(False, checked, record.sequence, problem, previous)
        if record_hash(previous, record.sequence, record.entry, record.recorded_at) != record.record_hash:
            return Verification(False, checked, record.sequence, "record content was altered", previous)
        previous = record.record_hash
        expected_sequence += 1
        checked += 1
    return Verification(True, checked, head_hash=previous)


_COLUMNS = (
    "sequence, event_id, kind, occurred_at, actor, case_number, purpose, trace_id, details_json, "
    "recorded_at, previous_hash, record_hash"
)
_INSERT_COLUMNS = (
    "sequence, event_id, kind, occurred_at, recorded_at, actor, case_number, purpose, trace_id, details_json, "
    "previous_hash, record_hash"
)


def _row_to_record(row: tuple[Any, ...]) -> StoredRecord:
    return StoredRecord(
        sequence=row[0],
        entry=AuditEntry(*row[1:9]),
        recorded_at=row[9],
        previous_hash=row[10],
        record_hash=row[11],
    )

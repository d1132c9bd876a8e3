"""The audit chain: an append-only, hash-chained log in SQLite (WAL, full sync) or PostgreSQL.

Each record's hash is SHA-256 over the previous record's hash and the record's canonical JSON,
so changing, deleting or reordering any record breaks verification at that record. Each record's
hash is also signed with the audit service's Ed25519 key, and signed checkpoints of the head are
kept and published (``signing``), so that a truncated and rewritten tail is caught too. Both backends
share the SQL, the append protocol (one appender at a time, a redelivered event stored once) and
the verification walk; they differ in how they connect and how they take the writer's lock.

An event may list parts (``audit_events.PARTS``: the photos of an import enrolled together, each
still named in the details). Each part is named by one record: an event whose every part a record
names already is a repeat under another id (an item redelivered after its group's event was stored)
and is not stored, as a redelivered event is not. ``audit_part`` says which record names each part:
an index beside the hashed records, which verification checks against their details, so that a row
slipped into it (to have a later event taken for a repeat) is caught.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from candor_kit.audit_records import (
    GENESIS_HASH,
    AuditEntry,
    StoredRecord,
    Verification,
    event_parts,
    record_hash,
    verify_records,
)
from candor_kit.audit_signing import Checkpoint, Signer, checkpoint_message, record_message
from candor_kit.errors import ServiceUnavailable

log = structlog.get_logger("candor.audit.chain")

#: The hashed records (made again, rows kept, when a chain from before needs it).
_RECORD_TABLE = """
CREATE TABLE IF NOT EXISTS audit_record (
    sequence      BIGINT PRIMARY KEY,
    event_id      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    occurred_at   TEXT NOT NULL,
    recorded_at   TEXT NOT NULL,
    actor         TEXT NOT NULL,
    case_number   TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    trace_id      TEXT NOT NULL,
    details_json  TEXT NOT NULL,
    previous_hash TEXT NOT NULL,
    record_hash   TEXT NOT NULL,
    key_id        TEXT NOT NULL DEFAULT '',
    signature     TEXT NOT NULL DEFAULT ''
)"""
_SCHEMA = (
    _RECORD_TABLE
    + """;
CREATE TABLE IF NOT EXISTS audit_checkpoint (
    sequence      BIGINT PRIMARY KEY,
    head_hash     TEXT NOT NULL,
    made_at       TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    signature     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_part (
    name          TEXT PRIMARY KEY,
    sequence      BIGINT NOT NULL
);
-- An event is its kind and its id: only the service owning a kind writes it, so no service can
-- take an id first that another service's event will have (see SqlAuditChain.append_many).
CREATE UNIQUE INDEX IF NOT EXISTS audit_record_event ON audit_record (event_id, kind);
CREATE INDEX IF NOT EXISTS audit_record_case ON audit_record (case_number, sequence);
CREATE INDEX IF NOT EXISTS audit_record_actor ON audit_record (actor, sequence);
CREATE INDEX IF NOT EXISTS audit_record_occurred ON audit_record (occurred_at);
CREATE INDEX IF NOT EXISTS audit_record_kind ON audit_record (kind, sequence);
"""
)


class SqlAuditChain:
    """The chain over a DB-API connection. Subclasses connect and take the writer's lock."""

    #: The driver's parameter marker, and the type of the sequence column.
    marker = "?"
    sequence_type = "BIGINT"

    def __init__(self, signer: Signer) -> None:
        self._signer = signer
        self._lock = threading.Lock()
        self._db: Any = self._connect()
        # Replicas starting together on a new database each create what is missing, one at a time:
        # CREATE ... IF NOT EXISTS alone fails against a concurrent twin in PostgreSQL.
        self._begin_schema(self._db)
        try:
            self._scope_event_ids_by_kind(self._db)
            for statement in filter(str.strip, _SCHEMA.replace("BIGINT", self.sequence_type).split(";")):
                self._db.execute(statement)
            columns = {column[0] for column in self._db.execute("SELECT * FROM audit_record LIMIT 0").description}
            for column in ("key_id", "signature") if "key_id" not in columns else ():
                # A chain from before signatures: its records stay unsigned and verification says so.
                self._db.execute(f"ALTER TABLE audit_record ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _scope_event_ids_by_kind(self, db: Any) -> None:
        """Take from a chain made before events were scoped by kind its rule that an event id is
        unique over all kinds (the schema then adds the rule for the pair); its records are kept
        as they are, so their hashes and signatures still verify."""
        raise NotImplementedError

    @property
    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """The keys whose signatures this chain accepts, by key id."""
        return {self._signer.key_id: self._signer.public_key}

    #: The driver's errors that mean the database cannot be reached (or dropped the connection):
    #: the call fails as unavailable, and the next one connects again.
    unavailable_errors: tuple[type[Exception], ...] = ()

    def _connect(self) -> Any:
        raise NotImplementedError

    def _broken(self, db: Any) -> bool:
        """Whether a connection can no longer be used (the server restarted, say)."""
        return False

    def _writer(self) -> Any:
        """The writer's connection: the open one, or a new one where it broke."""
        self._drop_broken_writer()
        if self._db is None:
            self._db = self._connect()
        return self._db

    def _drop_broken_writer(self) -> None:
        """Close and forget the writer's connection if it broke (the next call makes a new one)."""
        if self._db is not None and self._broken(self._db):
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """Turns a database out of reach into ServiceUnavailable, so events are retried and callers
        told to try again, and drops the writer's connection so the next call makes a new one."""
        try:
            yield
        except self.unavailable_errors as exc:
            self._drop_broken_writer()
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
            raise ServiceUnavailable(f"the audit database cannot be reached ({reason}); try again") from exc

    def _begin_exclusive(self, db: Any) -> None:
        """Open a transaction that no other appender can enter until it ends."""
        raise NotImplementedError

    def _begin_schema(self, db: Any) -> None:
        """Open a transaction that no other replica creating the schema can enter until it ends."""
        self._begin_exclusive(db)

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.marker)

    def append(self, entry: AuditEntry, recorded_at: str) -> StoredRecord | None:
        """Append an entry; returns None when its event id is already in the chain."""
        return self.append_many([(entry, recorded_at)])[0]

    def append_many(self, items: Sequence[tuple[AuditEntry, str]]) -> list[StoredRecord | None]:
        """Append ``(entry, recorded_at)`` pairs in order, in one transaction: one commit (one disk
        sync, one turn of the writer's lock) for the lot, each entry still its own record with its
        own hash and signature. Returns one outcome per pair: the stored record, or None where the
        chain (or an earlier pair of the same call) already held an event of its kind and id, or
        named every one of its parts (`event_parts`: an event naming several items, each named once
        in the chain). An id held under another kind is no repeat: the service that owns this kind
        alone may write it, and another service taking the id first would otherwise silence it.
        All or none are stored: a failure leaves the chain as it was."""
        if not items:
            return []
        with self._lock, self._reachable():
            db = self._writer()
            self._begin_exclusive(db)
            try:
                held = self._held(db, [(entry.kind, entry.event_id) for entry, _ in items])
                parts = [event_parts(entry.kind, entry.details_json) for entry, _ in items]
                named = self._named(db, [part for some in parts for part in some])
                last = db.execute(
                    "SELECT sequence, record_hash FROM audit_record ORDER BY sequence DESC LIMIT 1"
                ).fetchone()
                sequence, previous = (last[0], last[1]) if last else (0, GENESIS_HASH)
                outcomes: list[StoredRecord | None] = []
                new_parts: list[tuple[str, int]] = []
                for (entry, recorded_at), its_parts in zip(items, parts, strict=True):
                    if (entry.kind, entry.event_id) in held:
                        outcomes.append(None)
                        continue
                    held.add((entry.kind, entry.event_id))
                    if its_parts and all(part in named for part in its_parts):
                        # A repeat under another id: an item redelivered after its group's event
                        # was stored, named alone.
                        outcomes.append(None)
                        continue
                    sequence += 1
                    for part in its_parts:  # a part named before keeps its first record
                        if part not in named:
                            named[part] = sequence
                            new_parts.append((part, sequence))
                    digest = record_hash(previous, sequence, entry, recorded_at)
                    signature = self._signer.sign(record_message(sequence, digest))
                    outcomes.append(
                        StoredRecord(sequence, entry, recorded_at, previous, digest, self._signer.key_id, signature)
                    )
                    previous = digest
                rows = [_record_row(record) for record in outcomes if record is not None]
                if rows:
                    db.cursor().executemany(
                        self._sql(f"INSERT INTO audit_record ({_INSERT_COLUMNS}) VALUES ({', '.join('?' * 14)})"),
                        rows,
                    )
                if new_parts:
                    statement = self._sql("INSERT INTO audit_part (name, sequence) VALUES (?, ?)")
                    db.cursor().executemany(statement, new_parts)
                db.execute("COMMIT")
            except BaseException:
                if not self._broken(db):
                    db.execute("ROLLBACK")
                raise
        return outcomes

    def _held(self, db: Any, events: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of ``events``, (kind, event id) pairs, the chain holds (asked of ``db`` in chunks
        of 500 ids)."""
        wanted = set(events)
        statement = "SELECT kind, event_id FROM audit_record WHERE event_id IN ({})"
        return wanted & set(self._select_in(db, statement, sorted({event_id for _, event_id in wanted}), columns=2))

    def _named(self, db: Any, parts: Iterable[str]) -> dict[str, int]:
        """Which of ``parts`` (``part_name``) a record of the chain names, with that record's sequence."""
        wanted = sorted(set(parts))
        rows = self._select_in(db, "SELECT name, sequence FROM audit_part WHERE name IN ({})", wanted, columns=2)
        return {name: int(sequence) for name, sequence in rows}

    def _select_in(self, db: Any, statement: str, values: list[str], columns: int = 1) -> list[Any]:
        """Run ``statement``, whose ``IN ({})`` takes ``values``, in chunks of 500 of them."""
        found: list[Any] = []
        for start in range(0, len(values), 500):
            chunk = values[start : start + 500]
            rows = db.execute(self._sql(statement.format(", ".join("?" * len(chunk)))), chunk).fetchall()
            found.extend(row[0] if columns == 1 else tuple(row) for row in rows)
        return found

    def named_parts(self, parts: Iterable[str]) -> dict[str, int]:
        """Which of ``parts`` (``part_name``) a record names, with its sequence."""
        with self._reader() as db:
            return self._named(db, parts)

    def checkpoint(self, made_at: str) -> Checkpoint | None:
        """Sign the current head and keep it; None while the chain is empty.

        Calling it again before the chain grows returns the checkpoint already made.
        """
        with self._lock, self._reachable():
            db = self._writer()
            head = db.execute(
                "SELECT sequence, record_hash FROM audit_record ORDER BY sequence DESC LIMIT 1"
            ).fetchone()
            if head is None:
                return None
            existing = db.execute(
                self._sql(f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoint WHERE sequence = ?"), (head[0],)
            ).fetchone()
            if existing:
                return Checkpoint(*existing)
            signature = self._signer.sign(checkpoint_message(head[0], head[1], made_at))
            made = Checkpoint(head[0], head[1], made_at, self._signer.key_id, signature)
            db.execute(
                self._sql(
                    f"INSERT INTO audit_checkpoint ({_CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (sequence) DO NOTHING"
                ),
                (made.sequence, made.head_hash, made.made_at, made.key_id, made.signature),
            )
        return made

    def checkpoints(self) -> list[Checkpoint]:
        """The checkpoints this chain has made, oldest first."""
        with self._reader() as db:
            rows = db.execute(f"SELECT {_CHECKPOINT_COLUMNS} FROM audit_checkpoint ORDER BY sequence").fetchall()
        return [Checkpoint(*row) for row in rows]

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Any]:
        with self._reachable():
            db = self._connect()
            try:
                yield db
            finally:
                db.close()

    def verify(self, kept: list[Checkpoint] | None = None) -> Verification:
        """Walk the whole chain and report the first record that does not check out.

        Hashes, links and signatures are checked, and the head hash at every checkpoint: those this
        chain made, and ``kept`` ones that an outside party saved when they were published.
        """
        checkpoints = [*self.checkpoints(), *(kept or [])]
        with self._reader() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM audit_record ORDER BY sequence")
            walked = verify_records((_row_to_record(row) for row in rows), self.public_keys, checkpoints)
            if not walked.ok:
                return walked
            return self._verify_parts(db, walked)

    def _verify_parts(self, db: Any, walked: Verification) -> Verification:
        """``walked``, or its failure at the first row of ``audit_part`` that the record it points
        to does not list (a row slipped in would make a later event look like a repeat)."""
        rows = db.execute(
            "SELECT p.name, p.sequence, r.kind, r.details_json FROM audit_part p "
            "LEFT JOIN audit_record r ON r.sequence = p.sequence ORDER BY p.sequence, p.name"
        )
        record, listed = None, set()
        for name, sequence, kind, details_json in rows:
            if sequence != record:  # rows come in record order: each record's details read once
                record, listed = sequence, set(event_parts(kind or "", details_json or "{}"))
            if name not in listed:
                problem = f"the index of named parts says record {sequence} names {name}, which it does not list"
                return replace(walked, ok=False, first_bad_sequence=int(sequence), problem=problem)
        return walked

    def case_records(self, case_number: str, through: int) -> list[tuple[int, str]]:
        """(sequence, record hash) of every record of a case up to sequence ``through``, in order."""
        with self._reader() as db:
            statement = self._sql(
                "SELECT sequence, record_hash FROM audit_record "
                "WHERE case_number = ? AND sequence <= ? ORDER BY sequence"
            )
            return [(int(row[0]), str(row[1])) for row in db.execute(statement, (case_number, through)).fetchall()]

    def present(self, events: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of ``events``, (kind, event id) pairs, the chain holds."""
        with self._reader() as db:
            return self._held(db, events)

    def query(
        self,
        case_number: str = "",
        actor: str = "",
        since: str = "",
        until: str = "",
        limit: int = 1000,
        after: int = 0,
        kinds: Iterable[str] = (),
        event_id: str = "",
        *,
        event_ids: Iterable[str] = (),
        case_numbers: Iterable[str] = (),
    ) -> list[StoredRecord]:
        """Records filtered by case (or cases), actor, occurrence time (RFC 3339), kind and event id
        (or ids), oldest first, after sequence ``after`` (to page through)."""
        clauses, params = ["sequence > ?"], [after]
        for column, value, op in (
            ("actor", actor, "="),
            ("occurred_at", since, ">="),
            ("occurred_at", until, "<"),
        ):
            if value:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        for column, values in (
            ("kind", kinds),
            ("event_id", [event_id, *event_ids]),
            ("case_number", [case_number, *case_numbers]),
        ):
            wanted = sorted({value for value in values if value})
            if wanted:
                clauses.append(f"{column} IN ({', '.join('?' * len(wanted))})")
                params.extend(wanted)
        where = f"WHERE {' AND '.join(clauses)}"
        with self._reader() as db:
            statement = self._sql(f"SELECT {_COLUMNS} FROM audit_record {where} ORDER BY sequence LIMIT ?")
            rows = db.execute(statement, (*params, limit)).fetchall()
        return [_row_to_record(row) for row in rows]

    def close(self) -> None:
        """Close the writer connection."""
        with self._lock:
            if self._db is not None:
                self._db.close()


class AuditChain(SqlAuditChain):
    """The chain in one SQLite file: WAL, and every commit synced to disk."""

    # INTEGER PRIMARY KEY is SQLite's 64-bit rowid.
    sequence_type = "INTEGER"

    def __init__(self, path: Path, signer: Signer) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        super().__init__(signer)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _begin_exclusive(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")

    def _scope_event_ids_by_kind(self, db: sqlite3.Connection) -> None:
        # SQLite cannot drop a column's UNIQUE: the table is made again and its rows copied over.
        # Its indexes go with the old table and the schema makes them again on the new one.
        if not any(
            unique and [row[2] for row in db.execute(f"PRAGMA index_info('{index}')")] == ["event_id"]
            for _, index, unique, *_ in db.execute("PRAGMA index_list(audit_record)").fetchall()
        ):
            return
        records = db.execute("SELECT COUNT(*) FROM audit_record").fetchone()[0]
        log.info("audit_chain_migrating", change="an event id is unique for its kind", records=records)
        db.execute("ALTER TABLE audit_record RENAME TO audit_record_before_kinds")
        db.execute(_RECORD_TABLE.replace("BIGINT", self.sequence_type))
        # By name: a chain from before signatures lacks two columns, which take their defaults.
        columns = ", ".join(row[1] for row in db.execute("PRAGMA table_info(audit_record_before_kinds)"))
        db.execute(f"INSERT INTO audit_record ({columns}) SELECT {columns} FROM audit_record_before_kinds")
        db.execute("DROP TABLE audit_record_before_kinds")


class PostgresAuditChain(SqlAuditChain):
    """The chain in a PostgreSQL table. Appenders queue on a table lock; readers never wait.

    Several audit replicas may point at one database: the lock keeps the chain linear.
    """

    marker = "%s"

    def __init__(self, dsn: str, signer: Signer) -> None:
        import psycopg

        self.unavailable_errors = (psycopg.OperationalError,)
        self._dsn = dsn
        super().__init__(signer)

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)

    def _broken(self, db: Any) -> bool:
        return bool(db.closed or db.broken)

    def _begin_exclusive(self, db: Any) -> None:
        db.execute("BEGIN")
        # Conflicts with itself and with every write, not with plain reads.
        db.execute("LOCK TABLE audit_record IN SHARE ROW EXCLUSIVE MODE")

    def _begin_schema(self, db: Any) -> None:
        db.execute("BEGIN")
        # The table may not exist yet to be locked: a lock on the chain's own number instead,
        # released at COMMIT.
        db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))

    def _scope_event_ids_by_kind(self, db: Any) -> None:
        # The column's UNIQUE made a constraint of PostgreSQL's default name. Looked for first:
        # ALTER TABLE would lock out the other replicas' readers at every start.
        old = db.execute(
            "SELECT 1 FROM pg_constraint WHERE conname = 'audit_record_event_id_key' "
            "AND conrelid = to_regclass('audit_record')"
        ).fetchone()
        if old:
            log.info("audit_chain_migrating", change="an event id is unique for its kind")
            db.execute("ALTER TABLE audit_record DROP CONSTRAINT audit_record_event_id_key")


#: The advisory lock that serialises creating the schema ("candor" in ASCII).
SCHEMA_LOCK = 0x63616E646F72

_COLUMNS = (
    "sequence, event_id, kind, occurred_at, actor, case_number, purpose, trace_id, details_json, "
    "recorded_at, previous_hash, record_hash, key_id, signature"
)
_INSERT_COLUMNS = (
    "sequence, event_id, kind, occurred_at, recorded_at, actor, case_number, purpose, trace_id, details_json, "
    "previous_hash, record_hash, key_id, signature"
)
_CHECKPOINT_COLUMNS = "sequence, head_hash, made_at, key_id, signature"


def _row_to_record(row: tuple[Any, ...]) -> StoredRecord:
    return StoredRecord(
        sequence=row[0],
        entry=AuditEntry(*row[1:9]),
        recorded_at=row[9],
        previous_hash=row[10],
        record_hash=row[11],
        key_id=row[12],
        signature=row[13],
    )


def _record_row(record: StoredRecord) -> tuple[Any, ...]:
    """A record's values in the order of ``_INSERT_COLUMNS``."""
    entry = record.entry
    return (
        record.sequence, entry.event_id, entry.kind, entry.occurred_at, record.recorded_at, entry.actor,
        entry.case_number, entry.purpose, entry.trace_id, entry.details_json, record.previous_hash,
        record.record_hash, record.key_id, record.signature,
    )  # fmt: skip

"""An audit outbox: events made durable on the service's own disk, then carried to the audit stream.

A service that must record an action before it answers (the matcher, a search) can either wait
for the audit stream's acknowledgement on the answer's path, or write the event to a local outbox
and let it travel afterwards. The outbox is a SQLite file in WAL mode with ``synchronous=NORMAL``:
once ``publish`` returns, the event is in the file, so it survives the process's death (kill -9, a
crash, an out-of-memory kill); the operating system writes it to the disk within its write-back
interval, as nats-server does with a JetStream message it has acknowledged (its default
``sync_interval`` is 2 minutes). Only the machine's own loss within that interval could lose it,
and then the gateway's record of the search, on the replicated stream, still names it. Syncing
each write to the disk (``synchronous=FULL``) costs about what the stream's acknowledgement does
on the project's VM, so it would take nothing off the search (``bench/audit_outbox.py``).

A written event is published to the audit stream as soon as the stream takes it, in the order
written, under its ``audit_message_id`` (the stream and the chain store a retried event once).
Events left by a process that died or stopped before they went out are carried at the next start.

The outbox fails closed: past ``max_pending`` events not yet carried (the audit stream unreachable
for long), ``publish`` raises ServiceUnavailable, so the service stops answering rather than
piling up records nobody can see.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import structlog

from candor.audit.v1 import audit_pb2
from candor_kit import metrics
from candor_kit.audit_events import AuditPublisher
from candor_kit.errors import CandorError, ServiceUnavailable
from candor_kit.tasks import cancel_and_wait

log = structlog.get_logger("candor.audit_outbox")

#: Events not yet carried beyond which ``publish`` refuses (fail closed).
MAX_PENDING = 10_000
#: Events read from the file and published per pass.
BATCH = 100
#: Seconds between tries while the audit stream refuses, doubling up to RETRY_MAX_S.
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox "
    "(seq INTEGER PRIMARY KEY AUTOINCREMENT, subject TEXT NOT NULL, event BLOB NOT NULL)"
)


class AuditOutbox:
    """Durable local writes of one service's audit events, carried to the audit stream behind them.

    ``write`` is the store of an ``AuditPublisher`` of the same service (``store=outbox.write``),
    whose ``publish`` then returns once the event is in the file. ``open`` starts the carrier, which
    stores the events on the stream through ``stream`` (carrying what an earlier run left first);
    ``drain`` waits for what is waiting to go out; ``close`` stops.
    """

    def __init__(self, stream: AuditPublisher, path: Path, max_pending: int = MAX_PENDING) -> None:
        self._publisher = stream
        self._path = path
        self._max_pending = max_pending
        # Used from the event loop: with no sync a commit, a write takes microseconds, less than
        # handing it to a thread.
        self._db: sqlite3.Connection | None = None
        self._pending = 0
        self._empty = asyncio.Event()
        self._written = asyncio.Event()
        self._carrier: asyncio.Task[None] | None = None
        self._gauge = metrics.AUDIT_OUTBOX_PENDING.labels(stream.source)

    @property
    def pending(self) -> int:
        """Events written and not yet carried to the audit stream."""
        return self._pending

    async def open(self) -> None:
        """Open (or create) the file and start carrying its events."""
        self._count(self._connect())
        if self._pending:
            log.info("audit_outbox_resumed", pending=self._pending, source=self._publisher.source)
        self._carrier = asyncio.create_task(self._carry())
        self._written.set()

    async def write(self, subject: str, event: audit_pb2.AuditEvent) -> bool:
        """Write one event durably to the outbox (an ``AuditPublisher``'s store); ServiceUnavailable
        when the outbox is full or its file cannot be written."""
        if self._carrier is None:
            raise ServiceUnavailable("the audit outbox is not open yet")
        if self._pending >= self._max_pending:
            raise ServiceUnavailable(
                f"{self._pending} audit events are waiting for the audit stream; "
                "nothing more is done until it takes them"
            )
        # Counted before the write, so the carrier never forgets more than is counted.
        self._count(1)
        try:
            row = (subject, event.SerializeToString())
            self._file.execute("INSERT INTO outbox (subject, event) VALUES (?, ?)", row)
        except sqlite3.Error as exc:
            self._count(-1)
            raise ServiceUnavailable(f"the audit outbox cannot be written: {exc}") from exc
        self._written.set()
        return True  # new to the outbox; the stream and the chain store it once either way

    async def drain(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for what is waiting to be carried; the count still waiting."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), timeout_s)
        return self._pending

    async def close(self) -> None:
        """Stop carrying and close the file; what is still waiting is carried at the next start."""
        await cancel_and_wait(self._carrier)
        self._carrier = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._pending:
            log.info("audit_outbox_left", pending=self._pending, source=self._publisher.source)

    # --- the carrier ---------------------------------------------------------------------------

    async def _carry(self) -> None:
        """Publish the oldest events until none is left, then wait for the next write."""
        retry_s = RETRY_FIRST_S
        while True:
            await self._written.wait()
            self._written.clear()
            while True:
                try:
                    if not await self._carry_oldest():
                        break
                except (CandorError, sqlite3.Error) as exc:
                    # Kept and tried again: the stream unreachable, or the file unreadable for now.
                    log.warning("audit_outbox_waiting", pending=self._pending, retry_s=retry_s, error=str(exc))
                    await asyncio.sleep(retry_s)
                    retry_s = min(retry_s * 2, RETRY_MAX_S)
                    continue
                retry_s = RETRY_FIRST_S

    async def _carry_oldest(self) -> bool:
        """Publish up to BATCH of the oldest events and forget those the stream took; False when
        none was waiting."""
        rows = self._file.execute("SELECT seq, subject, event FROM outbox ORDER BY seq LIMIT ?", (BATCH,)).fetchall()
        carried = 0
        try:
            for seq, subject, data in rows:
                await self._publisher.publish_event(subject, audit_pb2.AuditEvent.FromString(data))
                carried = seq
        finally:
            self._forget(carried)
        return bool(rows)

    def _forget(self, through: int) -> None:
        """Delete the events carried, up to sequence ``through``, in one write (a crash before it
        only carries them again, and the stream stores them once)."""
        if through:
            self._count(-self._file.execute("DELETE FROM outbox WHERE seq <= ?", (through,)).rowcount)

    def _count(self, change: int) -> None:
        """Events waiting, changed by ``change``: the gauge and the drain's signal follow."""
        self._pending += change
        self._gauge.set(self._pending)
        if self._pending:
            self._empty.clear()
        else:
            self._empty.set()

    @property
    def _file(self) -> sqlite3.Connection:
        if self._db is None:
            raise ServiceUnavailable("the audit outbox is closed")
        return self._db

    def _connect(self) -> int:
        """Open the file (made on first use) and count what an earlier run left in it."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # see the module's docstring
        db.execute(_SCHEMA)
        self._db = db
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])

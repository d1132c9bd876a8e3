"""The audit service's consumer appends what it fetches in one transaction a batch, each event still
its own record in stream order; a poison message in a batch is dead-lettered alone, a redelivered
event is stored once, and a batch whose commit fails is delivered again whole and stored once.
Real nats-server, a real SQLite chain, the service's own consume loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.msg import Msg

from candor.audit.v1 import audit_pb2
from candor_audit import AuditChain
from candor_audit.service import AuditLog, consume
from candor_cli.processes import free_port, start_nats_server
from candor_kit import AuditPublisher, Bus, subjects
from candor_kit.audit_events import AUDIT_DEAD_LETTER, AUDIT_STREAM, ensure_audit_stream
from candor_kit.audit_signing import Signer
from candor_kit.bus import Outcome
from tests.unit.test_audit_chain import FailingSigner

SIGNER = Signer(Ed25519PrivateKey.generate())
BATCH = 64


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    server = start_nats_server(tmp_path / "nats", port)
    try:
        yield server, f"nats://127.0.0.1:{port}"
    finally:
        os.kill(server.pid, signal.SIGCONT)
        server.terminate()
        server.wait(10)


@pytest.fixture
async def bus(nats_server: tuple[subprocess.Popen[bytes], str]) -> AsyncIterator[Bus]:
    connected = await Bus.connect(nats_server[1], "audit-consume-test")
    try:
        await ensure_audit_stream(connected)
        yield connected
    finally:
        await connected.close()


async def publish_enrolments(bus: Bus, count: int, first: int = 0) -> list[str]:
    """``count`` of the matcher's enrolment events on the stream, in order, numbered from
    ``first``; their ids."""
    publisher = AuditPublisher(bus, "matcher")
    return [
        await publisher.publish(
            "gallery.import_enrolled", actor="importer", details={"n": n}, event_id=f"enrol-{n:04d}"
        )
        for n in range(first, first + count)
    ]


async def run_consumer(bus: Bus, audit_log: AuditLog, done: asyncio.Event, timeout_s: float = 30) -> None:
    """The service's consume loop until ``done`` is set (or the time is up)."""
    stop = asyncio.Event()
    task = asyncio.create_task(consume(bus, audit_log, BATCH, stop))
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def resend(bus: Bus, subject: str, event: audit_pb2.AuditEvent) -> bool:
    """Store ``event`` on the stream under a message id of its own."""
    await bus.publish_durable(subject, event, msg_id=f"again-{event.event_id}")
    return True


async def when(check: Callable[[], object], done: asyncio.Event) -> None:
    """Set ``done`` once ``check()`` holds (polled: the chain has no event to wait on)."""
    while not check():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    done.set()


async def test_a_backlog_is_appended_a_batch_a_commit_in_order_with_a_poison_message_dead_lettered_alone(
    bus: Bus, tmp_path: Path
) -> None:
    ids = await publish_enrolments(bus, 150)
    poisoned = subjects.audit_subject("matcher", "gallery.import_enrolled")
    await bus.client.publish(poisoned, b"\x0a\xff\x01not an event")  # JetStream takes it; it is no AuditEvent
    await bus.client.flush()
    # The same event sent again past the stream's duplicate check (another message id): the chain
    # stores it once.
    repeat = AuditPublisher(bus, "matcher", store=lambda subject, event: resend(bus, subject, event))
    await repeat.publish("gallery.import_enrolled", actor="importer", details={"n": 3}, event_id=ids[3])
    ids += await publish_enrolments(bus, 10, first=150)
    dead: list[bytes] = []

    async def dead_letter(msg: Msg) -> None:
        dead.append(msg.data)

    letters = await bus.client.subscribe(AUDIT_DEAD_LETTER, cb=dead_letter)

    chain = AuditChain(tmp_path / "audit.sqlite3", SIGNER)
    audit_log = AuditLog(chain, SIGNER)
    done = asyncio.Event()
    watcher = asyncio.create_task(when(lambda: len(chain.query(limit=500)) >= len(ids) and dead, done))
    try:
        await run_consumer(bus, audit_log, done)
    finally:
        watcher.cancel()
        await letters.unsubscribe()

    records = chain.query(limit=500)
    assert [r.entry.event_id for r in records] == ids, "every event once, in stream order"
    assert dead == [b"\x0a\xff\x01not an event"]
    commits = {r.recorded_at for r in records}
    assert len(commits) <= -(-(len(ids) + 2) // BATCH), f"{len(ids)} events in {len(commits)} commits"
    result = chain.verify()
    assert result.ok and result.records_checked == len(ids) and result.signatures_checked == len(ids)
    info = await bus.jetstream.consumer_info(AUDIT_STREAM, subjects.AUDIT_CONSUMER)
    assert info.num_pending == 0 and info.num_ack_pending == 0, "every message settled"
    # Marked here through the message before the poison one; the rest is read from the server's
    # ack floor, which this test's watermark is not given.
    assert audit_log.watermark.settled == 150
    chain.close()


async def test_a_batch_whose_commit_fails_is_delivered_again_whole_and_stored_once(bus: Bus, tmp_path: Path) -> None:
    ids = await publish_enrolments(bus, 40)
    chain = AuditChain(tmp_path / "audit.sqlite3", FailingSigner(fail_at=10))
    audit_log = AuditLog(chain, SIGNER)
    failures: list[str] = []
    append_messages = audit_log.append_messages

    async def appending(messages: Sequence[Msg]) -> list[Outcome]:
        try:
            return await append_messages(messages)
        except RuntimeError as exc:
            failures.append(f"{len(messages)} messages: {exc}")
            raise

    audit_log.append_messages = appending  # type: ignore[method-assign]
    done = asyncio.Event()
    watcher = asyncio.create_task(when(lambda: len(chain.query(limit=500)) >= len(ids), done))
    try:
        await run_consumer(bus, audit_log, done)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    records = chain.query(limit=500)
    # Each once. The order is the redelivery's: the server brings naked messages back as their
    # delays run out, not necessarily in stream order (the chain records when each was appended).
    assert sorted(r.entry.event_id for r in records) == ids
    assert chain.verify().ok
    info = await bus.jetstream.consumer_info(AUDIT_STREAM, subjects.AUDIT_CONSUMER)
    assert failures == ["40 messages: the signing key could not be used"], "one batch failed, whole"
    assert info.num_pending == 0 and info.num_ack_pending == 0
    chain.close()


async def test_a_consumer_started_while_jetstream_is_paused_appends_once_it_answers(
    bus: Bus, nats_server: tuple[subprocess.Popen[bytes], str], tmp_path: Path
) -> None:
    """The chain's only writer outlives a JetStream that does not answer as the service starts
    (its consumer is made once the server answers) instead of ending silently while the service
    reports SERVING."""
    chain = AuditChain(tmp_path / "audit.sqlite3", SIGNER)
    audit_log = AuditLog(chain, SIGNER)
    server = nats_server[0]
    stop = asyncio.Event()
    os.kill(server.pid, signal.SIGSTOP)
    task = asyncio.create_task(consume(bus, audit_log, BATCH, stop))
    try:
        await asyncio.sleep(6)  # past the JetStream client's 5 s request timeout
        os.kill(server.pid, signal.SIGCONT)
        ids = await publish_enrolments(bus, 3)
        done = asyncio.Event()
        await asyncio.wait_for(when(lambda: len(chain.query()) == len(ids) or task.done(), done), 30)
        assert not task.done(), f"the consumer ended: {task.exception() if not task.cancelled() else 'cancelled'}"
        assert [r.entry.event_id for r in chain.query()] == ids
    finally:
        os.kill(server.pid, signal.SIGCONT)
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        chain.close()

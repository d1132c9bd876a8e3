"""The audit outbox on a real nats-server and a real SQLite file: every event written reaches the
audit stream once, in order; events written while the stream cannot take them go out when it can;
events left by a process killed with -9 go out at the next start; a full outbox refuses."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from candor.audit.v1 import audit_pb2
from candor_cli.processes import free_port, start_nats_server
from candor_kit import AuditPublisher, Bus
from candor_kit.audit_events import AUDIT_STREAM, ensure_audit_stream
from candor_kit.audit_outbox import MAX_PENDING, AuditOutbox
from candor_kit.errors import ServiceUnavailable


@pytest.fixture
def server() -> Iterator[tuple[Path, int]]:
    """A nats-server of the test's own (its folder and port): each test starts on an empty stream."""
    with tempfile.TemporaryDirectory(prefix="candor-outbox-nats-") as folder:
        port = free_port()
        process = start_nats_server(Path(folder), port)
        yield Path(folder), port
        process.terminate()
        process.wait(10)


@pytest.fixture
async def bus(server: tuple[Path, int]) -> AsyncIterator[Bus]:
    connected = await Bus.connect(f"nats://127.0.0.1:{server[1]}", "outbox-test")
    yield connected
    await connected.close()


@contextlib.asynccontextmanager
async def opened(
    bus: Bus, path: Path, max_pending: int = MAX_PENDING
) -> AsyncIterator[tuple[AuditOutbox, AuditPublisher]]:
    """An open outbox on ``path`` and the matcher's publisher that records through it."""
    outbox = AuditOutbox(AuditPublisher(bus, "matcher"), path, max_pending)
    await outbox.open()
    try:
        yield outbox, AuditPublisher(bus, "matcher", store=outbox.write)
    finally:
        await outbox.close()


async def stored_events(bus: Bus, count: int, timeout_s: float = 20) -> list[audit_pb2.AuditEvent]:
    """The audit stream's first ``count`` events, once it holds them (in stream order)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (await bus.jetstream.stream_info(AUDIT_STREAM)).state.messages < count:
        assert loop.time() < deadline, "the events did not reach the audit stream"
        await asyncio.sleep(0.05)
    return [
        audit_pb2.AuditEvent.FromString((await bus.jetstream.get_msg(AUDIT_STREAM, seq)).data or b"")
        for seq in range(1, count + 1)
    ]


async def test_every_event_written_reaches_the_stream_once_in_the_order_written(bus: Bus, tmp_path: Path) -> None:
    await ensure_audit_stream(bus)
    async with opened(bus, tmp_path / "outbox.sqlite3") as (outbox, recorder):
        # Written one after another, then fifty at once.
        ids = [await recorder.publish("matcher.searched", actor="ivy", details={"n": n}) for n in range(5)]
        ids += await asyncio.gather(
            *(recorder.publish("matcher.searched", actor="ivy", details={"n": n}) for n in range(5, 55))
        )
        assert await outbox.drain(20) == 0
        events = await stored_events(bus, 55)
        assert [event.event_id for event in events[:5]] == ids[:5]
        assert sorted(event.event_id for event in events) == sorted(ids)
        assert (await bus.jetstream.stream_info(AUDIT_STREAM)).state.messages == 55  # none twice
        assert events[0].kind == "matcher.searched" and events[0].actor == "ivy"


async def test_events_written_while_the_stream_is_down_go_out_when_it_returns(bus: Bus, tmp_path: Path) -> None:
    await ensure_audit_stream(bus)
    async with opened(bus, tmp_path / "outbox.sqlite3") as (outbox, recorder):
        await bus.jetstream.delete_stream(AUDIT_STREAM)  # the stream cannot take anything now
        ids = [await recorder.publish("matcher.searched", actor="ivy") for _ in range(3)]
        assert outbox.pending == 3
        await asyncio.sleep(1)
        assert outbox.pending == 3  # kept while the stream refuses
        await ensure_audit_stream(bus)
        assert await outbox.drain(20) == 0
        assert [event.event_id for event in await stored_events(bus, 3)] == ids


EVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
KILLED_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from candor_kit import AuditPublisher, Bus
    from candor_kit.audit_outbox import MAX_PENDING, AuditOutbox

    async def main():
        bus = await Bus.connect(sys.argv[1], "outbox-writer")
        outbox = AuditOutbox(AuditPublisher(bus, "matcher"), Path(sys.argv[2]))
        recorder = AuditPublisher(bus, "matcher", store=outbox.write)
        await outbox.open()
        for n in range(3):
            print(await recorder.publish("matcher.searched", actor="ivy", details={"n": n}), flush=True)
        print("written", flush=True)
        await asyncio.sleep(60)  # killed here, the events not carried (no stream yet)

    asyncio.run(main())
    """
)


async def test_events_left_by_a_killed_process_go_out_at_the_next_start(
    server: tuple[Path, int], bus: Bus, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.sqlite3"
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_WRITER, f"nats://127.0.0.1:{server[1]}", str(path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert writer.stdout is not None
        lines: list[str] = []
        while not lines or lines[-1] != "written":  # the event ids, then "written" (among its log lines)
            line = await asyncio.wait_for(writer.stdout.readline(), 30)
            assert line, f"the writer ended early: {lines}"
            lines.append(line.decode().strip())
    finally:
        writer.kill()
        await writer.wait()
    ids = [line for line in lines if EVENT_ID.fullmatch(line)]
    assert len(ids) == 3
    await ensure_audit_stream(bus)
    async with opened(bus, path) as (outbox, _):
        assert await outbox.drain(20) == 0
        assert [event.event_id for event in await stored_events(bus, 3)] == ids


async def test_a_full_outbox_refuses_with_a_reason(bus: Bus, tmp_path: Path) -> None:
    # No audit stream: nothing is carried.
    async with opened(bus, tmp_path / "outbox.sqlite3", max_pending=2) as (outbox, recorder):
        for _ in range(2):
            await recorder.publish("matcher.searched", actor="ivy")
        with pytest.raises(ServiceUnavailable, match="waiting for the audit stream"):
            await recorder.publish("matcher.searched", actor="ivy")
        assert outbox.pending == 2

"""Opening a key-value bucket, a stream or an object store at a service's start while JetStream is
slow to answer (a cluster still forming, a loaded machine): the start waits and asks again instead
of failing; a server that never answers still fails it, in bounded time. Real nats-server, paused
with SIGSTOP."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from candor_audit.outside import CheckpointStream
from candor_cli.processes import free_port, start_nats_server
from candor_gateway.photos import PhotoStore
from candor_kit import Bus
from candor_kit.audit_events import ensure_audit_stream
from candor_kit.errors import ServiceUnavailable
from candor_kit.ingest import ensure_ingest_streams
from candor_kit.jetstream_setup import open_bucket


async def test_a_bucket_opened_while_jetstream_is_paused_past_its_timeout_opens_once_it_answers(
    tmp_path: Path,
) -> None:
    port = free_port()
    server = start_nats_server(tmp_path, port)
    bus = await Bus.connect(f"nats://127.0.0.1:{port}", "bucket-test")
    try:
        os.kill(server.pid, signal.SIGSTOP)
        opening = asyncio.ensure_future(open_bucket(bus, "SLOW_START", ttl=60.0))
        await asyncio.sleep(7)  # longer than the JetStream client's 5 s request timeout
        os.kill(server.pid, signal.SIGCONT)
        bucket = await asyncio.wait_for(opening, 30)
        await bucket.put("k", b"v")
        assert (await bucket.get("k")).value == b"v"
    finally:
        os.kill(server.pid, signal.SIGCONT)
        await bus.close()
        server.terminate()
        server.wait(10)


def photo_store_open(bus: Bus) -> Awaitable[None]:
    """The gateway's photo store opening its object store."""
    return PhotoStore(bytes(32), bucket="SLOW_PHOTOS").open(bus)


def checkpoint_stream_open(bus: Bus) -> Awaitable[None]:
    """The audit service's outside store of checkpoints creating its stream."""
    return CheckpointStream(bus.jetstream, {}).ensure()


@pytest.mark.parametrize(
    "set_up",
    [ensure_audit_stream, ensure_ingest_streams, photo_store_open, checkpoint_stream_open],
    ids=["audit stream", "import streams", "photo store", "checkpoint stream"],
)
async def test_a_stream_or_store_set_up_while_jetstream_is_paused_is_made_once_it_answers(
    tmp_path: Path, set_up: Callable[[Bus], Awaitable[None]]
) -> None:
    port = free_port()
    server = start_nats_server(tmp_path, port)
    bus = await Bus.connect(f"nats://127.0.0.1:{port}", "stream-test")
    try:
        os.kill(server.pid, signal.SIGSTOP)
        setting_up = asyncio.ensure_future(set_up(bus))
        await asyncio.sleep(6)  # longer than the JetStream client's 5 s request timeout
        os.kill(server.pid, signal.SIGCONT)
        await asyncio.wait_for(setting_up, 30)
        assert await bus.jetstream.streams_info()
    finally:
        os.kill(server.pid, signal.SIGCONT)
        await bus.close()
        server.terminate()
        server.wait(10)


async def test_a_bucket_that_cannot_be_opened_fails_the_start_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("candor_kit.jetstream_setup.START_WAIT_S", 6.0)
    port = free_port()
    server = start_nats_server(tmp_path, port)
    bus = await Bus.connect(f"nats://127.0.0.1:{port}", "bucket-test")
    try:
        os.kill(server.pid, signal.SIGSTOP)
        began = time.monotonic()
        with pytest.raises(ServiceUnavailable, match=r"SLOW_START.*JetStream did not answer"):
            await open_bucket(bus, "SLOW_START")
        assert time.monotonic() - began < 20
    finally:
        os.kill(server.pid, signal.SIGCONT)
        await bus.close()
        server.terminate()
        server.wait(10)

"""Opening a key-value bucket, a stream or an object store at a service's start while JetStream is
slow to answer (a cluster still forming, a loaded machine): the start waits and asks again instead
of failing; a server that never answers still fails it, in bounded time. Real nats-server, paused
with SIGSTOP."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from candor_audit.outside import CheckpointStream
from candor_cli.processes import free_port, start_nats_server
from candor_gateway.photos import PhotoStore
from candor_kit import Bus
from candor_kit.audit_events import ensure_audit_stream
from candor_kit.errors import ServiceUnavailable
from candor_kit.ingest import ensure_ingest_streams
from candor_kit.jetstream_setup import open_bucket

T = TypeVar("T")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[subprocess.Popen[bytes], Bus]]:
    """A real nats-server and a connection to it; the server is let go on even if a test left it paused."""
    port = free_port()
    server = start_nats_server(tmp_path, port)
    bus = await Bus.connect(f"nats://127.0.0.1:{port}", "setup-test")
    try:
        yield server, bus
    finally:
        os.kill(server.pid, signal.SIGCONT)
        await bus.close()
        server.terminate()
        server.wait(10)


async def while_paused(server: subprocess.Popen[bytes], work: Awaitable[T]) -> T:
    """``work`` begun while the server is paused for longer than the JetStream client's 5 s
    request timeout, then let go; its result once the server answers."""
    os.kill(server.pid, signal.SIGSTOP)
    started = asyncio.ensure_future(work)
    await asyncio.sleep(6)
    os.kill(server.pid, signal.SIGCONT)
    return await asyncio.wait_for(started, 30)


async def test_a_bucket_opened_while_jetstream_is_paused_past_its_timeout_opens_once_it_answers(
    served: tuple[subprocess.Popen[bytes], Bus],
) -> None:
    server, bus = served
    bucket = await while_paused(server, open_bucket(bus, "SLOW_START", ttl=60.0))
    await bucket.put("k", b"v")
    assert (await bucket.get("k")).value == b"v"


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
    served: tuple[subprocess.Popen[bytes], Bus], set_up: Callable[[Bus], Awaitable[None]]
) -> None:
    server, bus = served
    await while_paused(server, set_up(bus))
    assert await bus.jetstream.streams_info()


async def test_a_bucket_that_cannot_be_opened_fails_the_start_with_a_reason(
    served: tuple[subprocess.Popen[bytes], Bus], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("candor_kit.jetstream_setup.START_WAIT_S", 6.0)
    server, bus = served
    os.kill(server.pid, signal.SIGSTOP)
    began = time.monotonic()
    with pytest.raises(ServiceUnavailable, match=r"SLOW_START.*JetStream did not answer"):
        await open_bucket(bus, "SLOW_START")
    assert time.monotonic() - began < 20

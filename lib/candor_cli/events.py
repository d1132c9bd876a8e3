"""`candor events follow`: the event feed, printed as JSON lines (candor_client.events follows it)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import TextIO

from google.protobuf.json_format import MessageToDict
from nats.js.api import ConsumerConfig

from candor_cli.webhooks import load_endpoints, relay
from candor_client.events import EventFollower
from candor_kit.bus import NatsLogin
from candor_kit.metrics import MetricsServer


async def follow(
    login: NatsLogin,
    config: ConsumerConfig,
    count: int = 0,
    idle_s: float = 0.0,
    out: TextIO = sys.stdout,
) -> int:
    """`candor events follow`: print each event as one JSON line, then acknowledge it; stop after
    ``count`` events or ``idle_s`` seconds without one (0: never). Returns how many were printed."""
    bus = await login.connect("candor-events")
    follower = EventFollower(bus.jetstream, config)
    printed = 0
    loop = asyncio.get_running_loop()
    quiet_since = loop.time()
    try:
        await follower.open()
        while not count or printed < count:
            batch = await follower.fetch(min(64, count - printed) if count else 64, timeout_s=1.0)
            if not batch and idle_s and loop.time() - quiet_since >= idle_s:
                break
            for delivery in batch:
                fields = MessageToDict(delivery.event, preserving_proto_field_name=True)
                out.write(json.dumps({**fields, "redelivered": delivery.redelivered}) + "\n")
                out.flush()
                await delivery.ack()  # only once it is out
                printed += 1
                quiet_since = loop.time()
    finally:
        await follower.close()
        await bus.close()
    return printed


def run_relay(login: NatsLogin, endpoints: Path, metrics_address: str, backoff_s: tuple[float, ...]) -> int:
    """`candor events relay`: relay until SIGINT or SIGTERM, serving metrics when asked."""
    load_endpoints(endpoints)  # a bad file stops here, before any connection, naming each problem
    server = MetricsServer(metrics_address) if metrics_address else None
    if server is not None:
        server.start()

    async def until_signalled() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await relay(login, endpoints, stop, backoff_s)

    try:
        asyncio.run(until_signalled())
    finally:
        if server is not None:
            server.stop()
    return 0

"""`candor events follow`: the event feed, printed as JSON lines (candor_client.events follows it)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TextIO

from google.protobuf.json_format import MessageToDict
from nats.js.api import ConsumerConfig

from candor_client.events import EventFollower
from candor_kit.bus import NatsLogin


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

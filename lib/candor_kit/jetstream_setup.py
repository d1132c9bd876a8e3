"""Making a service's JetStream streams, key-value buckets and object stores as it starts.

Every service makes what it uses when it starts, when JetStream may be slow to answer: a cluster
still electing its leaders, a machine starting every container at once. A request that goes
unanswered (the client's timeout, or JetStream saying it is not available yet) is asked again for
up to START_WAIT_S; then the start fails with a reason an operator can act on, rather than with
the client's bare "nats: timeout" at the first 5 s (`make test-scale` saw a gateway die that way
on a freshly formed three-node cluster). What is already there is used as it is, with whatever
settings an operator gave it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import BadRequestError
from nats.js.errors import ServiceUnavailableError as JetStreamUnavailable
from nats.js.kv import KeyValue

from candor_kit.bus import Bus
from candor_kit.errors import ServiceUnavailable

__all__ = ["START_WAIT_S", "ensure_stream", "open_bucket", "set_up"]

log = structlog.get_logger("candor.jetstream")

#: Seconds a service's start asks JetStream again before it fails.
START_WAIT_S = 60.0

T = TypeVar("T")


async def set_up(what: str, make: Callable[[], Awaitable[T]], existing: Callable[[], Awaitable[T]]) -> T:
    """``make()`` the thing named ``what``, or ``existing()`` where it is already there (JetStream
    refuses to make it again with other settings); asked again while JetStream does not answer,
    for up to START_WAIT_S, then ServiceUnavailable saying what could not be made and why."""
    deadline = time.monotonic() + START_WAIT_S
    while True:
        try:
            try:
                return await make()
            except BadRequestError:
                return await existing()
        except (NatsTimeoutError, JetStreamUnavailable) as exc:
            if time.monotonic() >= deadline:
                raise ServiceUnavailable(
                    f"{what} could not be opened: JetStream did not answer for {START_WAIT_S:g} s; "
                    "check that the NATS servers are up and JetStream is enabled"
                ) from exc
            log.warning("jetstream_setup_waiting", what=what, error=str(exc) or type(exc).__name__)
            if isinstance(exc, JetStreamUnavailable):  # answered at once: do not ask in a tight loop
                await asyncio.sleep(0.5)


async def ensure_stream(jetstream: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream ``config`` describes when missing; one already there is kept as it is."""
    name = str(config.name)
    await set_up(f"the stream {name}", lambda: jetstream.add_stream(config), lambda: jetstream.stream_info(name))


async def open_bucket(bus: Bus, bucket: str, replicas: int = 1, ttl: float | None = None) -> KeyValue:
    """A key-value bucket (file storage, latest value only, entries kept ``ttl`` seconds or for
    ever), created when missing."""
    return await set_up(
        f"the key-value bucket {bucket}",
        lambda: bus.jetstream.create_key_value(
            bucket=bucket, history=1, storage=StorageType.FILE, replicas=replicas, ttl=ttl
        ),
        lambda: bus.jetstream.key_value(bucket),
    )

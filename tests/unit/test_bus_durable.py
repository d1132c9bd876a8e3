"""A durable publish on a real nats-server says whether the stream may hold the message: after a
failure that proves it stored nothing (no stream answered, the connection closed) it raises
NotStored, so a caller may treat the work as not done; after others (a timeout: the ack may be
lost) only ServiceUnavailable, and the caller must treat the outcome as unknown."""

from __future__ import annotations

import uuid

import pytest

from candor.common.v1 import common_pb2
from candor_kit import Bus, ServiceUnavailable
from candor_kit.errors import NotStored


async def test_a_publish_no_stream_takes_or_on_a_closed_connection_is_not_stored(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, "durable-test")
    message = common_pb2.Origin(actor="durable-test")
    with pytest.raises(NotStored, match="could not store"):
        await bus.publish_durable(f"no.stream.{uuid.uuid4().hex}", message, msg_id="m1")
    await bus.close()
    with pytest.raises(NotStored):
        await bus.publish_durable(f"no.stream.{uuid.uuid4().hex}", message, msg_id="m2")
    assert issubclass(NotStored, ServiceUnavailable)  # still UNAVAILABLE to a caller that asks no more

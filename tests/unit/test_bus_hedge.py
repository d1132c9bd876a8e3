"""A request asked again after a hedge delay, on a real nats-server: a request lost with the
replica that took it is answered by another replica well before the timeout, and a request nobody
answers still fails at the timeout, not at twice it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.msg import Msg

from candor.embedder.v1 import embedder_pb2
from candor_kit import Bus, metrics
from candor_kit.errors import NoAnswer

QUEUE = "replicas"


def hedged(subject: str) -> float:
    return metrics.NATS_HEDGED.labels(subject)._value.get()


async def test_a_request_held_by_a_replica_that_died_is_answered_by_another_once_asked_again(nats_url: str) -> None:
    subject = f"test.hedge.{uuid.uuid4().hex}"
    bus = await Bus.connect(nats_url, "hedge-test")
    replicas = await Bus.connect(nats_url, "hedge-replicas")
    taken = asyncio.Event()

    async def hold(msg: Msg) -> None:
        taken.set()

    async def answer(msg: Msg) -> None:
        await replicas.client.publish(msg.reply, embedder_pb2.EmbedResponse(embeddings=[]).SerializeToString())

    try:
        # The only replica at first takes the request and never answers; it is gone, and another
        # replica is there, before the hedge delay.
        silent = await replicas.client.subscribe(subject, QUEUE, cb=hold)
        await replicas.client.flush()
        request = asyncio.ensure_future(
            bus.request(subject, embedder_pb2.EmbedRequest(), embedder_pb2.EmbedResponse, timeout=30, hedge_after=2)
        )
        # Generous waits: the machine running the suite may be busy; what matters is the order. A
        # request that ended before the replica took it (refused, or never sent) fails here with
        # its own error, not as a wait that ran out.
        took = asyncio.ensure_future(taken.wait())
        await asyncio.wait({took, request}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if not took.done():
            took.cancel()
            assert request.done(), "the silent replica was not given the request within 60 s"
            request.result()  # raises what ended it
            pytest.fail("the request was answered before any replica answering it existed")
        taken_at = time.monotonic()
        await silent.unsubscribe()
        await replicas.client.subscribe(subject, QUEUE, cb=answer)
        await replicas.client.flush()
        await asyncio.wait_for(request, 25)
        assert time.monotonic() - taken_at < 10  # asked again after 2 s, not at the 30 s timeout
        assert hedged(subject) == 1
    finally:
        await replicas.close()
        await bus.close()


@pytest.fixture
async def silent_replica(nats_url: str) -> AsyncIterator[tuple[Bus, str, list[Msg]]]:
    """A bus, a fresh subject, and the requests a replica on it took and never answered."""
    subject = f"test.hedge.{uuid.uuid4().hex}"
    bus = await Bus.connect(nats_url, "hedge-test")
    held: list[Msg] = []

    async def hold(msg: Msg) -> None:
        held.append(msg)

    await bus.client.subscribe(subject, QUEUE, cb=hold)
    yield bus, subject, held
    await bus.close()


async def test_a_request_nobody_answers_fails_at_its_timeout_after_being_asked_twice(
    silent_replica: tuple[Bus, str, list[Msg]],
) -> None:
    bus, subject, held = silent_replica
    began = time.monotonic()
    with pytest.raises(NoAnswer, match=r"did not answer within 2 s"):
        await bus.request(subject, embedder_pb2.EmbedRequest(), embedder_pb2.EmbedResponse, 2, hedge_after=0.3)
    waited = time.monotonic() - began
    assert 1.9 < waited < 3.5  # at its timeout, not twice it
    assert len(held) == 2 and hedged(subject) == 1


async def test_without_a_hedge_delay_a_request_is_sent_once(silent_replica: tuple[Bus, str, list[Msg]]) -> None:
    bus, subject, held = silent_replica
    with pytest.raises(NoAnswer):
        await bus.request(subject, embedder_pb2.EmbedRequest(), embedder_pb2.EmbedResponse, 0.8)
    assert len(held) == 1 and hedged(subject) == 0

"""A request asked again after a hedge delay, on a real nats-server: a request lost with the
replica that took it is answered by another replica well before the timeout, and a request nobody
answers still fails at the timeout, not at twice it."""

from __future__ import annotations

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
    # The queue group's subscription stands for its replicas: the first request it takes is held
    # by a replica that died holding it (never answered); a request taken after that is answered,
    # as by another replica. One subscription, not a swap of two: whenever the machine running the
    # suite stalls, the request asked again still meets a replica that answers (swapping a silent
    # subscription for an answering one raced the hedge delay: a stall of 2 s left the second ask
    # with the silent one and the test waiting out its timeout).
    subject = f"test.hedge.{uuid.uuid4().hex}"
    bus = await Bus.connect(nats_url, "hedge-test")
    replicas = await Bus.connect(nats_url, "hedge-replicas")
    held: list[Msg] = []
    answered: list[Msg] = []

    async def take(msg: Msg) -> None:
        if not held:
            held.append(msg)
            return
        answered.append(msg)
        await replicas.client.publish(msg.reply, embedder_pb2.EmbedResponse(embeddings=[]).SerializeToString())

    try:
        await replicas.client.subscribe(subject, QUEUE, cb=take)
        # Bus.settle, not the client's flush(): a flush can return before the SUB has left the
        # client's buffer, and a request then finds no responder (1 in 1,000 here).
        await replicas.settle()
        began = time.monotonic()
        await bus.request(subject, embedder_pb2.EmbedRequest(), embedder_pb2.EmbedResponse, timeout=30, hedge_after=2)
        waited = time.monotonic() - began
        assert len(held) == 1 and len(answered) == 1  # asked twice: held once, answered once
        assert held[0].data == answered[0].data  # the same request asked again
        assert 1.9 < waited < 15  # after the hedge delay, well before the 30 s timeout
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
    await bus.settle()
    yield bus, subject, held
    await bus.close()


async def test_a_request_nobody_answers_fails_at_its_timeout_after_being_asked_twice(
    silent_replica: tuple[Bus, str, list[Msg]],
) -> None:
    bus, subject, held = silent_replica
    began = time.monotonic()
    with pytest.raises(NoAnswer, match=r"did not answer within 4 s"):
        await bus.request(subject, embedder_pb2.EmbedRequest(), embedder_pb2.EmbedResponse, 4, hedge_after=0.5)
    waited = time.monotonic() - began
    assert 3.9 < waited < 7  # at its timeout, not twice it (8 s), with room for a busy machine
    assert len(held) == 2 and hedged(subject) == 1


async def test_without_a_hedge_delay_a_request_is_sent_once(silent_replica: tuple[Bus, str, list[Msg]]) -> None:
    bus, subject, held = silent_replica
    with pytest.raises(NoAnswer):
        await bus.request(subject, embedder_pb2.EmbedRequest(), embedder_pb2.EmbedResponse, 0.8)
    assert len(held) == 1 and hedged(subject) == 0

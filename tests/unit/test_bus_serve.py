"""A service answers requests on one subject side by side, on a real nats-server: a request is not
held behind another still being handled (nats-py runs a subscription's callback one message at a
time, so the detector's lanes, the embedder's batches and the matcher's group commit each saw one
request at a time over the bus), in-flight work is bounded, and a bus that closes answers what it
had taken before it goes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from candor.common.v1 import common_pb2
from candor.embedder.v1 import embedder_pb2
from candor_kit import Bus
from candor_kit import bus as bus_module


@pytest.fixture
async def buses(nats_url: str) -> AsyncIterator[tuple[str, Bus, Bus]]:
    """A fresh subject, the service's bus that serves it and a client's bus that asks."""
    service = await Bus.connect(nats_url, "serve-test-service")
    client = await Bus.connect(nats_url, "serve-test-client")
    yield f"test.serve.{uuid.uuid4().hex}", service, client
    await client.close()
    await service.close()  # a second close, after a test's own, does nothing


def ask(client: Bus, subject: str, request: embedder_pb2.EmbedRequest, timeout: float) -> asyncio.Task:
    """A request on its way, not hedged."""
    return asyncio.create_task(client.request(subject, request, embedder_pb2.EmbedResponse, timeout, hedge_after=0.0))


async def test_a_request_is_answered_while_another_on_the_same_subject_is_still_being_handled(
    buses: tuple[str, Bus, Bus],
) -> None:
    subject, service, client = buses
    second_arrived, first_arrived = asyncio.Event(), asyncio.Event()
    handling: list[int] = []

    async def handle(request: embedder_pb2.EmbedRequest) -> embedder_pb2.EmbedResponse:
        # The first request waits until the second has arrived: handled one at a time, it never does.
        handling.append(len(request.chips))
        if len(request.chips) == 1:
            first_arrived.set()
            await asyncio.wait_for(second_arrived.wait(), 10)
        else:
            second_arrived.set()
        return embedder_pb2.EmbedResponse(embeddings=[])

    await service.serve(subject, "serve-test", embedder_pb2.EmbedRequest, handle)
    one_chip = embedder_pb2.EmbedRequest()
    one_chip.chips.add()
    first = ask(client, subject, one_chip, timeout=20)
    await asyncio.wait_for(first_arrived.wait(), 10)  # the first is being handled before the second is asked
    await ask(client, subject, embedder_pb2.EmbedRequest(), timeout=5)
    await asyncio.wait_for(first, 10)
    assert handling == [1, 0]


async def test_requests_in_flight_on_a_subject_are_bounded(buses: tuple[str, Bus, Bus]) -> None:
    subject, service, client = buses
    release, three = asyncio.Event(), asyncio.Event()
    at_once, most = [0], [0]

    async def handle(request: embedder_pb2.EmbedRequest) -> embedder_pb2.EmbedResponse:
        at_once[0] += 1
        most[0] = max(most[0], at_once[0])
        if at_once[0] == 3:
            three.set()
        await release.wait()
        at_once[0] -= 1
        return embedder_pb2.EmbedResponse(embeddings=[])

    await service.serve(subject, "serve-test", embedder_pb2.EmbedRequest, handle, max_in_flight=3)
    asked = [ask(client, subject, embedder_pb2.EmbedRequest(), timeout=20) for _ in range(8)]
    await asyncio.wait_for(three.wait(), 10)
    await asyncio.sleep(0.3)  # room for a fourth to start, were it allowed
    assert at_once[0] == 3
    release.set()
    await asyncio.wait_for(asyncio.gather(*asked), 10)  # the rest were held back, not dropped
    assert most[0] == 3


async def test_a_closing_bus_answers_the_requests_it_was_handling(buses: tuple[str, Bus, Bus]) -> None:
    subject, service, client = buses
    taken = asyncio.Event()

    async def handle(request: embedder_pb2.EmbedRequest) -> embedder_pb2.EmbedResponse:
        taken.set()
        await asyncio.sleep(0.5)  # still working when the service begins to stop
        return embedder_pb2.EmbedResponse(model=common_pb2.ModelRef(id="answered"))

    await service.serve(subject, "serve-test", embedder_pb2.EmbedRequest, handle)
    asked = ask(client, subject, embedder_pb2.EmbedRequest(), timeout=10)
    await asyncio.wait_for(taken.wait(), 10)
    await service.close()
    answer = await asyncio.wait_for(asked, 10)
    assert answer.model.id == "answered"


async def test_a_closing_bus_stops_within_its_drain_timeout_when_requests_never_end(
    buses: tuple[str, Bus, Bus], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole of close() keeps to DRAIN_TIMEOUT_S (a pod's grace period is sized to it), even
    when a handler never ends and a request behind it waits for a slot: nats-py's drain of the
    subscription waits for that request's callback, and the callback for the slot."""
    subject, service, client = buses
    monkeypatch.setattr(bus_module, "DRAIN_TIMEOUT_S", 1.0)
    taken, release = asyncio.Event(), asyncio.Event()

    async def handle(request: embedder_pb2.EmbedRequest) -> embedder_pb2.EmbedResponse:
        taken.set()
        await release.wait()  # stuck until the test ends
        return embedder_pb2.EmbedResponse()

    await service.serve(subject, "serve-test", embedder_pb2.EmbedRequest, handle, max_in_flight=1)
    asked = [ask(client, subject, embedder_pb2.EmbedRequest(), timeout=15) for _ in range(2)]
    try:
        await asyncio.wait_for(taken.wait(), 10)
        await asyncio.sleep(0.3)  # the second request is at the subscription, waiting for the slot
        began = time.monotonic()
        await asyncio.wait_for(service.close(), 8)
        assert time.monotonic() - began < 3, "close() took more than its drain timeout"
    finally:
        release.set()
        for request in asked:
            request.cancel()
        await asyncio.gather(*asked, return_exceptions=True)

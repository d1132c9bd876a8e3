"""A gateway and a matcher stopping leave nothing of theirs running on the event loop: the watch
that keeps the gallery's model record in memory for searches ends with its service (it stayed
pending before, to be destroyed still pending with the loop, its connection long closed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from candor.gateway.v1 import gateway_pb2_grpc
from tests.integration.conftest import InProcessStack, as_user
from tests.integration.test_governance import gallery, probe_request  # noqa: F401 - fixture

INVESTIGATOR = as_user("investigator-token")
WATCH = "gallery-models-watch"


def watches() -> set[asyncio.Task[object]]:
    """The model-record watches running on this loop."""
    return {task for task in asyncio.all_tasks() if task.get_name() == WATCH and not task.done()}


async def test_a_stopped_gateway_and_matcher_leave_no_watch_running(
    stack: InProcessStack,
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    samples: Path,
    gallery: None,  # noqa: F811
) -> None:
    await stack.stop("gateway")  # restarted: whatever an earlier gateway left is not this one's
    await stack.start("gateway")
    others = watches()
    # A search: the gateway's and the matcher's watches begin (whatever it finds).
    await gateway.Search(probe_request(samples, "STOP-1"), metadata=INVESTIGATOR)
    started = watches() - others
    assert started, "the search started no watch"
    await stack.stop("gateway")
    await stack.stop("matcher")
    try:
        assert not (started & watches()), "a stopped service's watch is still running"
    finally:
        await stack.start("matcher")
        await stack.start("gateway")

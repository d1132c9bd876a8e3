"""Calls whose caller stops waiting part way (a short deadline), and what the chain holds after."""

from __future__ import annotations

import json
from collections.abc import Awaitable

import grpc

from tests.integration.conftest import InProcessStack
from tests.integration.test_search_flow import audit_records


async def cut_short(call: Awaitable[object]) -> bool:
    """Whether ``call``, made with a short deadline, was cut short by it; any other failure is
    the call's own and fails the test."""
    try:
        await call
    except grpc.aio.AioRpcError as cut:
        assert cut.code() == grpc.StatusCode.DEADLINE_EXCEEDED, cut
        return True
    return False


async def audited(stack: InProcessStack, kinds: list[str], field: str, actor: str = "") -> dict[str, set[str]]:
    """For each of ``kinds``, the values of one field of its records' details (``actor``'s only, if named)."""
    found: dict[str, set[str]] = {kind: set() for kind in kinds}
    for record in await audit_records(stack, kinds=kinds, **({"actor": actor} if actor else {})):
        found[record.event.kind].add(json.loads(record.event.details_json).get(field))
    return found

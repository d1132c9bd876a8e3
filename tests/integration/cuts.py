"""Calls whose caller stops waiting part way (a short deadline), a key-value bucket's stream electing
a leader, and what the chain holds after."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import grpc
import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NoStreamResponseError
from nats.js.kv import KeyValue

from tests.integration.conftest import InProcessStack
from tests.integration.test_search_flow import audit_records
from tests.waiting import eventually


def electing_a_leader(monkeypatch: pytest.MonkeyPatch, bucket: str, method: str, *, stored: bool = False) -> list[str]:
    """Make the first ``method`` call (``get``, ``put``, ``create``, ``update``) on the key-value
    bucket ``bucket`` fail as nats-py fails it while the bucket's stream elects a leader (a NATS
    node of three killed): never done ("no response from stream"), or, for a write with
    ``stored``, stored and its answer lost (a timeout). Returns the keys so failed. A fault
    injected round the real call, named as one: an election cannot be timed on one nats-server."""
    real = getattr(KeyValue, method)
    failed: list[str] = []

    async def election(kv: KeyValue, key: str, *args: object, **kwargs: object) -> object:
        if kv._name == bucket and not failed:  # this bucket, not the others
            failed.append(key)
            if stored:
                await real(kv, key, *args, **kwargs)
                raise NatsTimeoutError
            raise NoStreamResponseError
        return await real(kv, key, *args, **kwargs)

    monkeypatch.setattr(KeyValue, method, election)
    return failed


def deadlines(whole_s: float, count: int, low: float, high: float) -> list[float]:
    """``count`` deadlines from ``low`` to ``high`` times a whole call's time, evenly apart: some
    land before the call begins its work, some inside it, some after it."""
    return [whole_s * (low + (high - low) * step / (count - 1)) for step in range(count)]


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


async def nothing_left_half_done(
    check: Callable[[], Awaitable[bool]], problems: list[str], of: str, none_cut: str
) -> None:
    """Wait until ``check`` holds. It fills ``problems`` with what it found half done, and holds
    once there is none and a call cut short has ended (cut calls run on after their caller left).
    Fails with "<n> of <of>: <problems>", or with ``none_cut`` when no call was cut inside its work."""
    try:
        await eventually(check)
    except AssertionError:
        if problems:
            pytest.fail(f"{len(problems)} of {of}: {problems}")
        pytest.fail(none_cut)

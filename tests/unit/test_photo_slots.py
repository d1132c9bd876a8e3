"""The gateway sheds photo work beyond its in-flight limit instead of queueing it in memory."""

from __future__ import annotations

import pytest

from candor_gateway.slots import PhotoSlots
from candor_kit import GRPC_STATUS, Overloaded


def test_calls_beyond_the_limit_are_shed_and_slots_come_back() -> None:
    slots = PhotoSlots(limit=2)
    with slots.claim(), slots.claim():
        with pytest.raises(Overloaded, match="2 photos are already being processed"):
            with slots.claim():
                pass
    with slots.claim():  # both slots were released, even though the inner claim failed
        pass


def test_a_failing_call_releases_its_slot() -> None:
    slots = PhotoSlots(limit=1)
    with pytest.raises(RuntimeError):
        with slots.claim():
            raise RuntimeError("downstream failed")
    with slots.claim():
        pass


def test_shed_calls_get_resource_exhausted() -> None:
    assert GRPC_STATUS[Overloaded.code].name == "RESOURCE_EXHAUSTED"

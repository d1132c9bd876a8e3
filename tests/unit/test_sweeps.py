"""A round of one of the gateway's sweeps: whatever it meets, the gateway goes on, and only a round
that leaves nothing unsettled moves the series that CandorRetentionSweepFailing watches. (The
whole sweep, on a real stack: tests/e2e/test_faults.py.)"""

from __future__ import annotations

import time

import pytest
from nats.errors import ConnectionClosedError

from candor_gateway.photos import PhotoHeader
from candor_gateway.sweeps import run_round
from candor_kit import ServiceUnavailable
from candor_kit.metrics import SWEEP_LAST_CLEAN


def last_clean(name: str) -> float:
    return SWEEP_LAST_CLEAN.labels(name)._value.get()


async def test_a_clean_round_moves_the_series_and_one_that_leaves_something_does_not() -> None:
    SWEEP_LAST_CLEAN.labels("unit-left").set(0)

    async def left_two() -> int:
        return 2

    await run_round("unit-left", left_two)
    assert last_clean("unit-left") == 0

    async def clean() -> int:
        return 0

    before = time.time()
    await run_round("unit-left", clean)
    assert before <= last_clean("unit-left") <= time.time()


@pytest.mark.parametrize(
    "error",
    [
        ServiceUnavailable("the audit chain did not answer"),
        ConnectionClosedError(),
        OSError("disk full"),
        TypeError("can't compare offset-naive and offset-aware datetimes"),  # a defect
    ],
)
async def test_a_round_that_fails_is_logged_and_ends_nothing(error: Exception, capsys: pytest.CaptureFixture) -> None:
    SWEEP_LAST_CLEAN.labels("unit-failing").set(0)

    async def failing() -> int:
        raise error

    await run_round("unit-failing", failing)  # no exception: the gateway's serving goes on
    assert last_clean("unit-failing") == 0
    logged = capsys.readouterr()
    assert "sweep_failed" in logged.out + logged.err  # where depends on how logging was set up


@pytest.mark.parametrize(
    ("stored_at", "why"),
    [("2020-01-01T00:00:00", "names no time zone"), ("yesterday", "is not a time"), (None, "is not a time")],
)
def test_a_header_whose_stored_at_retention_cannot_compare_is_unreadable(stored_at: object, why: str) -> None:
    good = PhotoHeader("probe", "6d7c1e1e-2a43-4b4a-9f7e-1f0e3c9b8a77", "0" * 64, origin="search")
    assert PhotoHeader.decode(good.encoded()) == good
    text = good.encoded().replace(f'"{good.stored_at}"', "null" if stored_at is None else f'"{stored_at}"')
    with pytest.raises(ValueError, match=why):
        PhotoHeader.decode(text)

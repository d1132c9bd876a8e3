"""Work a service runs beside its callers: kept running through failures, and run to its end
when its caller stops waiting."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from candor_kit.tasks import keep_running, run_to_the_end


def _told(logs: list[dict[str, object]], event: str) -> list[dict[str, object]]:
    """The log entries of one kind: tasks an earlier test left on the session's loop log too."""
    return [entry for entry in logs if str(entry["event"]).startswith(event)]


async def test_work_whose_caller_is_cancelled_goes_on_to_its_end_and_its_failure_is_logged() -> None:
    steps: list[str] = []
    release = asyncio.Event()

    async def expunge(fail: bool) -> str:
        steps.append("matcher")
        await release.wait()
        steps.append("photos")
        if fail:
            raise RuntimeError("the photo store cannot be reached")
        return "done"

    with capture_logs() as logs:
        for fail in (False, True):
            caller = asyncio.ensure_future(run_to_the_end(expunge(fail), "expunge"))
            await asyncio.sleep(0.01)
            caller.cancel()  # the client's deadline
            with pytest.raises(asyncio.CancelledError):
                await caller
            release.set()
            for _ in range(100):
                await asyncio.sleep(0.01)
                if steps.count("photos") == (2 if fail else 1) and len(_told(logs, "unawaited_work")) == (
                    2 if fail else 1
                ):
                    break
            release.clear()
    assert steps == ["matcher", "photos", "matcher", "photos"]
    assert [(entry["event"], entry.get("error")) for entry in _told(logs, "unawaited_work")] == [
        ("unawaited_work_ended", None),
        ("unawaited_work_failed", "the photo store cannot be reached"),
    ]
    # A caller that waits gets the result, or the error, as from the work itself.
    release.set()
    assert await run_to_the_end(expunge(False), "expunge") == "done"
    with pytest.raises(RuntimeError, match="cannot be reached"):
        await run_to_the_end(expunge(True), "expunge")


async def test_a_loop_that_fails_is_started_again_until_stopped_each_failure_logged() -> None:
    stop = asyncio.Event()
    runs = 0

    async def work(until: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            until.set()
            return
        raise ConnectionError("NATS is not reachable")

    with capture_logs() as logs:
        await asyncio.wait_for(keep_running("loop_failed", work, stop, retry_s=0.01, stage="embed"), 5)
    assert runs == 3
    failure = ("loop_failed", "embed", "NATS is not reachable")
    assert [(e["event"], e["stage"], e["error"]) for e in _told(logs, "loop_failed")] == [failure, failure]

"""Background asyncio tasks a service owns and ends when it stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from candor_kit.errors import CandorError

log = structlog.get_logger("candor.tasks")
T = TypeVar("T")
#: Work that goes on after its caller left: held here, since the loop keeps only weak references.
_UNAWAITED: set[asyncio.Task[Any]] = set()


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has ended, so nothing of a stopped service is left pending
    on the loop (to be destroyed still pending when the loop closes). A task that already ended is
    left as it ended: its own error, if any, was its loop's to report."""
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def keep_running(
    event: str,
    work: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    *,
    retry_s: float = 2.0,
    logger: Any = log,
    **context: str,
) -> None:
    """Run ``work(stop)`` until ``stop`` is set, starting it again ``retry_s`` after it fails (NATS
    unreachable, a stream gone): a loop beside a service's serving must outlive its failures. Each
    failure is logged as ``event`` (by ``logger``, the caller's) with ``context`` and the error's
    message."""
    while not stop.is_set():
        try:
            await work(stop)
        except Exception as exc:  # noqa: BLE001 - logged and started again: the service keeps serving
            logger.error(event, **context, error=str(exc) or type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_s)


async def run_to_the_end(work: Awaitable[T], what: str) -> T:
    """``work``'s result; cancelling the caller (a client that gave up, its deadline) does not
    cancel ``work``, which goes on to its end. For steps that must not be left half done, such as
    an expunge between the matcher's delete, the photos' and its audit record. How work that ends
    after its caller left went is logged as ``what``."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            _UNAWAITED.add(task)
            task.add_done_callback(lambda ended: _report_unawaited(ended, what))
        raise


def _report_unawaited(task: asyncio.Task[Any], what: str) -> None:
    """Log the end of work whose caller left: nobody else will hear of it."""
    _UNAWAITED.discard(task)
    if task.cancelled():
        log.warning("unawaited_work_cancelled", work=what)
    elif isinstance(error := task.exception(), CandorError):  # answered as a refusal, had anyone waited
        log.warning("unawaited_work_refused", work=what, error=error.message)
    elif error is not None:
        log.error("unawaited_work_failed", work=what, error=str(error) or type(error).__name__)
    else:
        log.info("unawaited_work_ended", work=what)

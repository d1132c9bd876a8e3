"""Background asyncio tasks a service owns and ends when it stops."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has ended, so nothing of a stopped service is left pending
    on the loop (to be destroyed still pending when the loop closes). A task that already ended is
    left as it ended: its own error, if any, was its loop's to report."""
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

"""Waiting in tests for what happens in another task or process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 20, what: str = "") -> None:
    """Poll until check() is true; AssertionError naming ``what`` when it never is."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not in {timeout_s:g} s: {what}" if what else "condition not met in time")

"""How far the chain has caught up with the audit stream, so a read can wait for its own writes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from candor_kit import ServiceUnavailable

log = structlog.get_logger("candor.audit")


#: How long a read-your-writes query waits for the chain to catch up, and how often it asks the
#: server (the consumer's ack floor covers every replica and dead-lettered messages).
CATCH_UP_DEADLINE_S = 5.0
CATCH_UP_REFRESH_S = 0.1
#: Settled messages held beyond a gap before the ack floor is asked for.
MAX_AHEAD = 1000


class StreamWatermark:
    """The stream sequence up to which every audit message is settled: advanced by this replica's
    own appends as they happen, and from the server's ack floor (which also counts other replicas'
    appends and dead-lettered messages) when a gap holds it back."""

    def __init__(self, ack_floor: Callable[[], Awaitable[int]] | None = None) -> None:
        self.settled = 0
        self._ahead: set[int] = set()
        self._ack_floor = ack_floor
        self._moved = asyncio.Event()

    def mark(self, sequence: int) -> None:
        """One message settled here."""
        if sequence > self.settled:
            self._ahead.add(sequence)
            self._advance(self.settled)

    async def refresh(self) -> None:
        """Advance to the server's ack floor."""
        if self._ack_floor is None:
            return
        try:
            floor = await self._ack_floor()
        except Exception as exc:  # noqa: BLE001 - the local watermark still serves; the next refresh retries
            log.warning("audit_ack_floor_unavailable", error=str(exc))
            return
        self._advance(floor)

    def _advance(self, floor: int) -> None:
        self.settled = max(self.settled, floor)
        while self.settled + 1 in self._ahead:
            self.settled += 1
        self._ahead = {s for s in self._ahead if s > self.settled}
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    @property
    def gapped(self) -> bool:
        """Whether too many settled messages wait behind a gap."""
        return len(self._ahead) > MAX_AHEAD

    async def reached(self, sequence: int) -> None:
        """Return once ``sequence`` is settled; UNAVAILABLE after CATCH_UP_DEADLINE_S."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATCH_UP_DEADLINE_S
        while self.settled < sequence:
            if loop.time() > deadline:
                raise ServiceUnavailable(
                    f"the audit chain is behind: settled through stream message {self.settled}, asked {sequence}"
                )
            moved = self._moved
            try:
                await asyncio.wait_for(moved.wait(), CATCH_UP_REFRESH_S)
            except TimeoutError:
                await self.refresh()

"""The gateway's cap on photos in flight, shared by every call that decodes one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from candor_kit import Overloaded


class PhotoSlots:
    """Caps how many photos the gateway processes at once; beyond the cap a call is shed
    (RESOURCE_EXHAUSTED, audited) rather than queued, so a burst cannot pile photos up in memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_use = 0

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Hold one slot for the duration of the block."""
        if self._in_use >= self.limit:
            raise Overloaded(f"{self.limit} photos are already being processed; retry shortly")
        self._in_use += 1
        try:
            yield
        finally:
            self._in_use -= 1

"""The daily search quota per user, counted from the audit chain.

The count is the user's ``search.completed`` records since midnight UTC, read after the chain holds
everything this gateway published, plus the user's searches in flight here. So the quota holds
across restarts and replicas (the chain is shared), and a burst of parallel calls cannot slip past
it on one gateway. The check fails closed: when the chain cannot be read, the search is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter
from collections.abc import Iterator

from candor_gateway.audit_reader import AuditReader
from candor_gateway.policy import Rule
from candor_kit.errors import QuotaExhausted


class SearchQuota:
    """Counts a user's searches of the day against the policy's quota (0: no quota)."""

    def __init__(self, reader: AuditReader) -> None:
        self._reader = reader
        self._in_flight: Counter[str] = Counter()

    @contextlib.contextmanager
    def claim(self, user: str, quota: int) -> Iterator[None]:
        """Count one search of ``user`` as in flight for the duration of the block."""
        if not quota:
            yield
            return
        self._in_flight[user] += 1
        try:
            yield
        finally:
            self._in_flight[user] -= 1
            if not self._in_flight[user]:
                del self._in_flight[user]

    async def check(self, user: str, quota: int) -> None:
        """Refuse (RESOURCE_EXHAUSTED) when the user's searches today, with this one, exceed ``quota``."""
        if not quota:
            return
        midnight = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        done = await self._reader.records(kinds=["search.completed"], actor=user, since=midnight, at_most=quota)
        # This search is among the in-flight ones.
        if len(done) + self._in_flight[user] > quota:
            raise QuotaExhausted(
                f"user {user} has used the policy's quota of {quota} searches today (UTC)", rule=Rule.QUOTA
            )

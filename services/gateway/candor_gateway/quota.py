"""The daily search quota per user, counted from the audit chain.

The count is the user's ``search.completed`` records since midnight UTC, read after the chain holds
everything this gateway published, plus the user's searches in flight here; so the quota holds
across restarts and replicas (the chain is shared), and a burst of parallel calls cannot slip past
it on one gateway. The chain is reread for a user at most every CHAIN_REREAD_S; in between, this
gateway adds its own completed searches to the last read (so other replicas' searches of the last
few seconds may be missed, never this one's). While the audit service cannot answer, searches go
on (their events wait in JetStream) and the quota is counted from this gateway's own tally of the
day instead; the search's audit record says which count was used.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import structlog

from candor_gateway.audit_reader import AuditReader
from candor_kit.errors import DeadlineExceeded, QuotaExhausted, ServiceUnavailable
from candor_kit.policy import Rule

#: Where a quota count came from, as the search's audit record names it.
FROM_CHAIN = "audit chain"
#: Seconds a user's count read from the chain is reused (with this gateway's tally added).
CHAIN_REREAD_S = 30.0
FROM_RECENT_READ = f"audit chain, read in the last {CHAIN_REREAD_S:g} s, plus this gateway's tally since"
FROM_GATEWAY = "gateway tally (audit unavailable)"


@dataclass(frozen=True)
class ChainCount:
    """A user's searches of one day as the chain said, when, and this gateway's tally then."""

    read_at: float
    day: dt.date
    searches: int
    tallied: int


log = structlog.get_logger("candor.gateway.quota")


class SearchQuota:
    """Counts a user's searches of the day against the policy's quota (0: no quota)."""

    def __init__(self, reader: AuditReader) -> None:
        self._reader = reader
        self._in_flight: Counter[str] = Counter()
        #: This gateway's completed searches of the day (``_day``, UTC) per user.
        self._day = _midnight().date()
        self._tally: Counter[str] = Counter()
        self._read: dict[str, ChainCount] = {}

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

    def completed(self, user: str) -> None:
        """Add a completed search to this gateway's tally of the day."""
        self._tally_for(_midnight().date())[user] += 1

    def _tally_for(self, day: dt.date) -> Counter[str]:
        """The tally of ``day``; a new day starts empty, forgetting the last day's counts and reads."""
        if day != self._day:
            self._day, self._tally, self._read = day, Counter(), {}
        return self._tally

    async def check(self, user: str, quota: int) -> str:
        """Refuse (RESOURCE_EXHAUSTED) when the user's searches today, with this one, exceed ``quota``;
        returns where the count came from ("" without a quota)."""
        if not quota:
            return ""
        midnight = _midnight()
        tallied = self._tally_for(midnight.date())[user]
        now = time.monotonic()
        last = self._read.get(user)
        if last is not None and last.day == midnight.date() and now - last.read_at < CHAIN_REREAD_S:
            done, source = last.searches + tallied - last.tallied, FROM_RECENT_READ
        else:
            try:
                found = await self._reader.records(
                    on_behalf_of=user, kinds=["search.completed"], actor=user, since=midnight, at_most=quota
                )
                done, source = len(found), FROM_CHAIN
                self._read[user] = ChainCount(now, midnight.date(), done, tallied)
            except (ServiceUnavailable, DeadlineExceeded) as exc:
                log.warning("quota_counted_locally", reason=exc.message)
                done, source = 0, FROM_GATEWAY
        # This search is among the in-flight ones.
        if max(done, tallied) + self._in_flight[user] > quota:
            raise QuotaExhausted(
                f"user {user} has used the policy's quota of {quota} searches today (UTC)", rule=Rule.QUOTA
            )
        return source


def _midnight() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)

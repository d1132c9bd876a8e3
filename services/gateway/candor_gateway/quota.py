"""The daily search quota per user, counted by every gateway replica together.

Each search claims one of the user's searches of the UTC day in a count all replicas share
(SEARCH_COUNTS_BUCKET, one key per user and day, written by compare-and-set), before anything is
matched; a search that ends without its record gives its claim back. So a burst of one user's
searches spread over any number of replicas gets exactly the quota, never a replica's quota each.

The audit chain is the count's floor: the user's ``search.completed`` records since midnight UTC,
read after the chain holds everything this gateway published (so the quota holds even when the
shared count was lost), reread for a user at most every CHAIN_REREAD_S, with this gateway's own
completed searches added in between. While the shared count cannot be reached, the quota is
counted from the chain and this gateway's searches in flight; while the audit service cannot
answer either, searches go on (their events wait in JetStream) and this gateway's own tally of
the day is used. The search's audit record says which count was used.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from nats.js.kv import KeyValue

from candor_gateway.audit_reader import AuditReader
from candor_kit import Bus
from candor_kit.errors import DeadlineExceeded, QuotaExhausted, ServiceUnavailable
from candor_kit.jetstream_setup import open_bucket
from candor_kit.kv_entries import KeptChanging, change_entry
from candor_kit.policy import Rule
from candor_kit.subjects import SEARCH_COUNTS_BUCKET

#: Where a quota count came from, as the search's audit record names it.
FROM_CHAIN = "audit chain"
#: Seconds a user's count read from the chain is reused (with this gateway's tally added).
CHAIN_REREAD_S = 30.0
FROM_RECENT_READ = f"audit chain, read in the last {CHAIN_REREAD_S:g} s, plus this gateway's tally since"
FROM_GATEWAY = "gateway tally (audit unavailable)"
#: A count from the shared one names its floor's source after it: "<FROM_SHARED>; floor: <source>".
FROM_SHARED = "the day's count shared by every gateway"
#: How long a day's count is kept (past its day, so a search at midnight finds it whole).
COUNT_KEPT_S = 2 * 86_400.0
#: Compare-and-set tries on one count before the search is refused as unavailable.
COUNT_TRIES = 20
COUNT_CONTENDED = "the day's search count kept changing; try again"


@dataclass(frozen=True)
class ChainCount:
    """A user's searches of one day as the chain said, when, and this gateway's tally then."""

    read_at: float
    day: dt.date
    searches: int
    tallied: int


log = structlog.get_logger("candor.gateway.quota")


class SharedCounts:
    """Each user's searches of a UTC day, one key per user and day in SEARCH_COUNTS_BUCKET, which
    every gateway replica changes by compare-and-set. Keys name the user by digest: a user name
    need not be a valid key, and the bucket need not list who searched."""

    def __init__(self, bus: Bus, replicas: int = 1) -> None:
        self._bus = bus
        self._replicas = replicas
        self._bucket: KeyValue | None = None

    async def open(self) -> None:
        """Create the bucket when missing."""
        self._bucket = await open_bucket(self._bus, SEARCH_COUNTS_BUCKET, self._replicas, ttl=COUNT_KEPT_S)

    async def take(self, user: str, day: dt.date, quota: int, floor: int) -> bool:
        """Claim one of ``user``'s searches on ``day`` unless the day's count (at least ``floor``)
        has reached ``quota``; whether it was claimed. ServiceUnavailable when the count cannot
        be read or written."""
        return await self._change(
            _count_key(user, day), lambda count: max(count, floor) + 1 if max(count, floor) < quota else None
        )

    async def give_back(self, user: str, day: dt.date) -> None:
        """Give back one claimed search (one that ended without its record). One that cannot be
        given back stays counted: the quota errs by one search too few, never one too many."""
        try:
            await self._change(_count_key(user, day), lambda count: count - 1 if count else None)
        except ServiceUnavailable as exc:
            log.warning("quota_claim_not_given_back", reason=exc.message)

    async def _change(self, key: str, edit: Callable[[int], int | None]) -> bool:
        """Write ``edit(count)`` over the count read, by compare-and-set, reading again when another
        replica wrote first; False when ``edit`` leaves it alone (None). ServiceUnavailable when
        the count cannot be read or written."""
        if self._bucket is None:
            raise RuntimeError("SharedCounts.open() was not awaited")

        def counted(value: bytes | None) -> tuple[bytes | None, bool]:
            try:
                count = int(value or b"0")
            except ValueError:  # not one of ours: counted from the chain alone, and written over
                count = 0
            changed = edit(count)
            return (None, False) if changed is None else (str(changed).encode(), True)

        try:
            changed, _ = await change_entry(self._bucket, key, counted, tries=COUNT_TRIES, contended=COUNT_CONTENDED)
        except KeptChanging:
            raise
        except Exception as exc:
            raise ServiceUnavailable(f"the day's search count cannot be read or written: {exc}") from exc
        return changed


def _count_key(user: str, day: dt.date) -> str:
    return f"{day.isoformat()}.{hashlib.sha256(user.encode('utf-8', 'replace')).hexdigest()[:32]}"


@dataclass
class Claim:
    """One search's claim on its user's daily quota: given back unless the search is recorded."""

    user: str
    day: dt.date | None = None
    kept: bool = False

    def keep(self) -> None:
        """The search is recorded: its claim stays counted."""
        self.kept = True


class SearchQuota:
    """Counts a user's searches of the day against the policy's quota (0: no quota)."""

    def __init__(self, reader: AuditReader, shared: SharedCounts | None = None) -> None:
        self._reader = reader
        self._shared = shared
        self._in_flight: Counter[str] = Counter()
        #: This gateway's completed searches of the day (``_day``, UTC) per user.
        self._day = _midnight().date()
        self._tally: Counter[str] = Counter()
        self._read: dict[str, ChainCount] = {}

    @contextlib.asynccontextmanager
    async def claim(self, user: str, quota: int) -> AsyncIterator[Claim]:
        """Count one search of ``user`` as in flight for the duration of the block; the shared
        count ``check`` claimed is given back at its end unless the block kept it (``Claim.keep``)."""
        claim = Claim(user)
        if not quota:
            yield claim
            return
        self._in_flight[user] += 1
        try:
            yield claim
        finally:
            self._in_flight[user] -= 1
            if not self._in_flight[user]:
                del self._in_flight[user]
            if claim.day is not None and not claim.kept and self._shared is not None:
                await self._shared.give_back(user, claim.day)

    def completed(self, user: str) -> None:
        """Add a completed search to this gateway's tally of the day."""
        self._tally_for(_midnight().date())[user] += 1

    def _tally_for(self, day: dt.date) -> Counter[str]:
        """The tally of ``day``; a new day starts empty, forgetting the last day's counts and reads."""
        if day != self._day:
            self._day, self._tally, self._read = day, Counter(), {}
        return self._tally

    async def check(self, claim: Claim, quota: int) -> str:
        """Refuse (RESOURCE_EXHAUSTED) when the user's searches today, with this one, exceed ``quota``,
        else claim this one in the shared count; returns where the count came from ("" without a
        quota)."""
        if not quota:
            return ""
        user = claim.user
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
        if self._shared is not None:
            taking = asyncio.ensure_future(self._shared.take(user, midnight.date(), quota, floor=max(done, tallied)))
            try:
                taken = await asyncio.shield(taking)
            except asyncio.CancelledError:
                # The search ended (its photo had no face, say) while its claim was written: wait
                # for the write, so that a claim taken is given back, not counted for ever.
                with contextlib.suppress(Exception):
                    if await taking:
                        claim.day = midnight.date()
                raise
            except ServiceUnavailable as exc:
                log.warning("quota_counted_without_other_gateways", reason=exc.message)
            else:
                if not taken:
                    raise _exhausted(user, quota)
                claim.day = midnight.date()
                return f"{FROM_SHARED}; floor: {source}"
        # This search is among the in-flight ones.
        if max(done, tallied) + self._in_flight[user] > quota:
            raise _exhausted(user, quota)
        return source


def _exhausted(user: str, quota: int) -> QuotaExhausted:
    return QuotaExhausted(f"user {user} has used the policy's quota of {quota} searches today (UTC)", rule=Rule.QUOTA)


def _midnight() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)

"""Probe retention: a search's probe is kept, encrypted in the photo store, for the people who
review its candidates, and deleted (the deletion audited first) once the policy's days after the
last decision have passed, or at once when the policy keeps no probes. A probe no search on the
chain accounts for is deleted an hour after it was stored (UNRECORDED_GRACE), whatever the days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import structlog
from nats.errors import Error as NatsError

from candor_gateway.photos import PhotoHeader, PhotoStore
from candor_gateway.reviews import ReviewDesk
from candor_gateway.search_file import SearchFile
from candor_kit import AuditPublisher, CandorError
from candor_kit.policy import Policy, Reviews

#: A probe whose search the chain does not hold is deleted only after this long: its search may
#: still be on its way into the chain from another gateway.
UNRECORDED_GRACE = dt.timedelta(hours=1)
#: The reason a probe.deleted record gives for a probe whose search the chain does not hold.
UNRECORDED = "its search was never recorded"
#: From how many probes past their days a round reads every search and review recorded since the
#: oldest was stored (a read per 1,000 records: after a restart, every probe of 30 to 60 days ago
#: under the default policy). Fewer (the few that pass their days each hour) are read by their
#: ids: two reads (their searches, their cases' reviews), where a month of records would be read.
READ_TOGETHER_FROM = 100
log = structlog.get_logger("candor.gateway.retention")
T = TypeVar("T")


class ProbeSweep:
    """The retention sweep of one gateway: each round deletes the retained probes whose retention
    has ended.

    Every read of the chain is itself a record on it, so the sweep remembers from round to round
    what it has read: the young probes whose search the chain holds (asked about once), and for
    the others the earliest their search can have been decided (``_decided_from``), so that a
    probe kept for weeks after its policy days is read about again only when those days could
    have run out since. No decision can come earlier than the moment one was found missing; one
    submitted while the audit service was down reaches the chain later, and its probe goes that
    much later, never sooner."""

    def __init__(self, photos: PhotoStore, desk: ReviewDesk, audit: AuditPublisher) -> None:
        self._photos = photos
        self._desk = desk
        self._audit = audit
        self._recorded: set[str] = set()
        self._decided_from: dict[str, dt.datetime] = {}
        #: The review rules the decisions above were read under: a change of them (the window, the
        #: reviews needed) changes when a search counts as decided, so what was read is forgotten.
        self._rules: Reviews | None = None

    async def round(self, policy: Policy, now: dt.datetime | None = None) -> int:
        """Delete the probes whose retention has ended, each deletion audited first (with an id
        derived from the search, so two replicas sweeping at once record it once). One probe that
        cannot be settled (its header or its search unreadable, the store failing) is logged and
        passed by, so the others are still swept. Returns how many were passed by."""
        now = now or dt.datetime.now(dt.UTC)
        headers, unreadable = await self._photos.read_headers("probe")
        stored = {header.key for header in headers}
        self._recorded &= stored  # only those still stored
        if policy.reviews != self._rules:
            self._decided_from.clear()
            self._rules = policy.reviews
        self._decided_from = {key: when for key, when in self._decided_from.items() if key in stored}
        files: dict[str, SearchFile] = {}
        if policy.retention.keep_probes:  # otherwise every probe goes, and nothing need be read
            days = dt.timedelta(days=policy.retention.probe_days_after_decision)
            await self._read_recorded_together(headers, days, now)
            files = await self._read_decisions_together(headers, days, now)
        deleted, failed = 0, len(unreadable)
        for header in headers:
            try:
                deleted += await self._delete_if_due(header, policy, now, files)
            except (CandorError, NatsError, OSError, ValueError) as exc:  # its search's record, the store
                failed += 1
                log.warning("probe_sweep_failed", search_id=header.key, error=str(exc) or type(exc).__name__)
        if deleted:
            log.info("probes_deleted", count=deleted)
        return failed

    async def _read_recorded_together(self, headers: list[PhotoHeader], days: dt.timedelta, now: dt.datetime) -> None:
        """Find, in one paged read of the searches recorded since the oldest was stored, which of
        the young probes past the hour have their search on the chain (every probe of the last
        days after a restart; those that came of age since the last round after that). Asked one
        by one, each would add a record of the read to the chain. A probe not found here is still
        asked about alone (``_why_delete``), once the chain holds everything on the stream, before
        it is deleted."""
        asking = [
            header
            for header in headers
            if header.key not in self._recorded and header.stored + UNRECORDED_GRACE <= now < header.stored + days
        ]
        recorded = await _read_together(asking, 2, lambda since, _: self._desk.searches_recorded_since(since))
        self._recorded |= (recorded or set()) & {header.key for header in asking}

    async def _read_decisions_together(
        self, headers: list[PhotoHeader], days: dt.timedelta, now: dt.datetime
    ) -> dict[str, SearchFile]:
        """The search files, with their reviews, of the probes past their days whose decision must
        be read this round: from READ_TOGETHER_FROM of them (after a restart), in one paged read of
        what was recorded since the oldest was stored; fewer, by their ids. A probe whose search
        is not found so is read alone (``_why_delete``), as before."""
        asking = [
            header
            for header in headers
            if header.stored + days <= now
            and ((known := self._decided_from.get(header.key)) is None or known + days <= now)
        ]
        if len(asking) >= READ_TOGETHER_FROM:
            return await _read_together(asking, 1, self._desk.search_files_since) or {}
        return await _read_together(asking, 1, lambda _, keys: self._desk.search_files(keys)) or {}

    async def _why_delete(
        self, header: PhotoHeader, policy: Policy, now: dt.datetime, files: Mapping[str, SearchFile]
    ) -> str | None:
        """Why a retained probe must go now, or None while it is kept (``files``: the search files
        read together this round)."""
        retention = policy.retention
        if not retention.keep_probes:
            return "the policy keeps no probes"
        unrecorded_by_now = header.stored + UNRECORDED_GRACE <= now
        days = dt.timedelta(days=retention.probe_days_after_decision)
        if header.stored + days > now:
            # Decided no earlier than it was stored, its days cannot have run out yet. Only whether
            # its search is recorded at all is asked (once): a probe no search on the record
            # accounts for (its gateway killed between storing it and recording the search) goes.
            if not unrecorded_by_now or header.key in self._recorded:
                return None
            if await self._desk.search_recorded(header.key):
                self._recorded.add(header.key)
                return None
            return UNRECORDED
        known = self._decided_from.get(header.key)
        if known is not None and known + days > now:
            return None  # read before: its days cannot have run out yet
        found = files.get(header.key) or await self._desk.search_file(header.key)
        if found is None:
            return UNRECORDED if unrecorded_by_now else None
        decided = found.decided_at(policy.reviews.window_days, now)
        # Undecided now, it is decided no earlier than now (a window closing later closes later).
        self._decided_from[header.key] = decided or now
        if decided is None:
            return None
        until = decided + days
        if until > now:
            return None
        return f"decided {decided.date().isoformat()}; kept {retention.probe_days_after_decision} days after"

    async def _delete_if_due(
        self, header: PhotoHeader, policy: Policy, now: dt.datetime, files: Mapping[str, SearchFile]
    ) -> int:
        """Delete one probe (and a proficiency test's exemplar beside it) if its retention has
        ended; how many probes went (0 or 1)."""
        why = await self._why_delete(header, policy, now, files)
        if why is None:
            return 0
        await self._audit.publish(
            "probe.deleted",
            event_id=f"{header.key}/probe.deleted",
            actor="system",
            details={
                "search_id": header.key,
                "probe_sha256": header.sha256,
                "stored_at": header.stored_at,
                "reason": why,
            },
        )
        deleted = await self._photos.delete("probe", header.key)
        await self._photos.delete("exemplar", header.key)  # a proficiency test's candidate goes with its probe
        return int(deleted)


async def _read_together(
    asking: list[PhotoHeader], at_least: int, read: Callable[[dt.datetime, set[str]], Awaitable[T]]
) -> T | None:
    """``read(since, keys)`` of what the chain holds about ``asking``'s searches, all at once
    (``since``: a little before the oldest was stored, for a read of everything recorded since: a
    search is recorded after its probe is stored, beside matching; the grace allows for the clocks
    of the gateways that stored and recorded it); None when fewer than ``at_least`` are asked
    about, or when the read fails (each is then read alone, as before)."""
    if len(asking) < at_least:
        return None
    since = min(header.stored for header in asking) - UNRECORDED_GRACE
    try:
        return await read(since, {header.key for header in asking})
    except (CandorError, NatsError) as exc:
        log.warning("probe_sweep_read_failed", error=str(exc) or type(exc).__name__)
        return None

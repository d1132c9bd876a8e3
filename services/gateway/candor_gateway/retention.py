"""Probe retention: a search's probe is kept, encrypted in the photo store, for the people who
review its candidates, and deleted (the deletion audited first) once the policy's days after the
last decision have passed, or at once when the policy keeps no probes. A probe no search on the
chain accounts for is deleted an hour after it was stored (UNRECORDED_GRACE), whatever the days.
"""

from __future__ import annotations

import datetime as dt

import structlog
from nats.errors import Error as NatsError

from candor_gateway.photos import PhotoHeader, PhotoStore
from candor_gateway.reviews import ReviewDesk
from candor_kit import AuditPublisher, CandorError
from candor_kit.policy import Policy

#: A probe whose search the chain does not hold is deleted only after this long: its search may
#: still be on its way into the chain from another gateway.
UNRECORDED_GRACE = dt.timedelta(hours=1)
#: The reason a probe.deleted record gives for a probe whose search the chain does not hold.
UNRECORDED = "its search was never recorded"
log = structlog.get_logger("candor.gateway.retention")


async def _why_delete(
    header: PhotoHeader, policy: Policy, desk: ReviewDesk, now: dt.datetime, recorded: set[str]
) -> str | None:
    """Why a retained probe must go now, or None while it is kept. ``recorded`` holds the probes
    whose search the chain was found to hold, so that each is asked about once, not every round."""
    retention = policy.retention
    if not retention.keep_probes:
        return "the policy keeps no probes"
    unrecorded_by_now = header.stored + UNRECORDED_GRACE <= now
    if header.stored + dt.timedelta(days=retention.probe_days_after_decision) > now:
        # Decided no earlier than it was stored, its days cannot have run out yet. Only whether
        # its search is recorded at all is asked (once): a probe no search on the record accounts
        # for (its gateway killed between storing it and recording the search) goes now.
        if not unrecorded_by_now or header.key in recorded:
            return None
        if await desk.search_recorded(header.key):
            recorded.add(header.key)
            return None
        return UNRECORDED
    found = await desk.search_file(header.key)
    if found is None:
        return UNRECORDED if unrecorded_by_now else None
    decided = found.decided_at(policy.reviews.window_days, now)
    if decided is None:
        return None
    until = decided + dt.timedelta(days=retention.probe_days_after_decision)
    if until > now:
        return None
    return f"decided {decided.date().isoformat()}; kept {retention.probe_days_after_decision} days after"


async def sweep(
    photos: PhotoStore,
    policy: Policy,
    desk: ReviewDesk,
    audit: AuditPublisher,
    recorded: set[str],
    now: dt.datetime | None = None,
) -> int:
    """Delete the probes whose retention has ended, each deletion audited first (with an id
    derived from the search, so two replicas sweeping at once record it once). ``recorded`` is
    the sweeper's memory from round to round of the probes whose search the chain holds (kept to
    the probes still stored). One probe that cannot be settled (its header or its search
    unreadable, the store failing) is logged and passed by, so the others are still swept.
    Returns how many were passed by."""
    now = now or dt.datetime.now(dt.UTC)
    headers, unreadable = await photos.read_headers("probe")
    recorded.intersection_update(header.key for header in headers)
    deleted, failed = 0, len(unreadable)
    for header in headers:
        try:
            deleted += await _delete_if_due(header, photos, policy, desk, audit, now, recorded)
        except (CandorError, NatsError, OSError, ValueError) as exc:  # its search's record, the store
            failed += 1
            log.warning("probe_sweep_failed", search_id=header.key, error=str(exc) or type(exc).__name__)
    if deleted:
        log.info("probes_deleted", count=deleted)
    return failed


async def _delete_if_due(
    header: PhotoHeader,
    photos: PhotoStore,
    policy: Policy,
    desk: ReviewDesk,
    audit: AuditPublisher,
    now: dt.datetime,
    recorded: set[str],
) -> int:
    """Delete one probe (and a proficiency test's exemplar beside it) if its retention has ended;
    how many probes went (0 or 1)."""
    why = await _why_delete(header, policy, desk, now, recorded)
    if why is None:
        return 0
    await audit.publish(
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
    deleted = await photos.delete("probe", header.key)
    await photos.delete("exemplar", header.key)  # a proficiency test's candidate goes with its probe
    return int(deleted)

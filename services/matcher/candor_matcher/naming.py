"""The audit record of an import's enrolments: one event for the photos enrolled together, each
photo still named in it (its record, subject, photo hash and item).

The import worker settles several photos at once (``CANDOR_IMPORT_BATCH``) and the matcher writes
their vectors in one group commit; their audit event is one too, instead of one a photo: the audit
service signs, hashes and stores one record where it stored several, and nats-server keeps one
message. Each photo's part id (``<import id>.<item>``) is listed under the event's parts, and the
chain names each part once: a photo delivered again after its group's event was stored (the matcher
died before acknowledging it) is named alone, under its part, and the chain takes that event for a
repeat and does not store it. A redelivered photo is never grouped with new ones, so a group's
event does not name a photo named before (were it to, through a work item queued twice past the
work stream's hour of duplicate detection, the group is stored and the chain's index keeps the
photo's first record).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from candor_kit import AuditPublisher
from candor_kit.ingest import delivery_count
from candor_matcher.group_commit import GroupCommit

#: The audit kind of an import's enrolments.
KIND = "gallery.import_enrolled"
#: How long a group of photos waits for more to join it before its event is stored, unless it is
#: full first (a worker's whole batch). An import's photos reach the matcher one by one at the
#: pipeline's pace (a photo every 50 to 100 ms on two cores), so without a wait each would be named
#: alone. Only the photo's result waits: the worker takes the next photos meanwhile, and a full
#: group is stored at once.
LINGER_S = 0.25
#: The details one event carries at most, in JSON bytes: well under the chain's 64 KiB limit even
#: with the longest photo references (1,000 characters, escaped).
EVENT_BUDGET_BYTES = 40 * 1024


@dataclass
class NamedPhoto:
    """One photo an import enrolled (or found enrolled), as its audit event names it."""

    import_id: str
    item: int
    submitted_by: str
    model: tuple[str, str]
    record: dict[str, Any]

    @property
    def part(self) -> str:
        """The photo's part id: the chain names each once."""
        return f"{self.import_id}.{self.item}"

    @property
    def group(self) -> tuple[str, str, tuple[str, str]]:
        """Photos that may share one event: of one import, submitted by one user, one model."""
        return (self.import_id, self.submitted_by, self.model)


class ImportNaming:
    """Records an import's enrolments in the audit chain, the photos enrolled together in one event."""

    def __init__(self, audit: AuditPublisher, together: int, linger_s: float = LINGER_S) -> None:
        """``together``: the most photos one event names, a worker's batch (CANDOR_IMPORT_BATCH):
        no more can be waiting at once, so a group that size is full."""
        self._audit = audit
        self._together: GroupCommit[NamedPhoto, None] = GroupCommit(self._publish_group, together, linger_s)

    async def name(self, enrolled: NamedPhoto) -> None:
        """Return once an audit event naming ``enrolled`` is stored (raises when none could be)."""
        if delivery_count() > 1:
            # An earlier delivery may have named it in a group: alone, its event is either new or
            # wholly a repeat, never a group naming some photos a second time.
            await self._publish([enrolled])
            return
        await self._together.submit(enrolled)

    async def _publish_group(self, enrolled: list[NamedPhoto]) -> list[BaseException | None]:
        """One event for each set of photos that may share one; a failed event fails its photos only."""
        outcomes: list[BaseException | None] = [None] * len(enrolled)
        groups: dict[tuple[str, str, tuple[str, str]], list[int]] = {}
        for at, one in enumerate(enrolled):
            groups.setdefault(one.group, []).append(at)
        for positions in groups.values():
            for chunk in _within_budget(positions, enrolled):
                try:
                    await self._publish([enrolled[at] for at in chunk])
                except Exception as exc:  # noqa: BLE001 - these photos are retried, the others not
                    for at in chunk:
                        outcomes[at] = exc
        return outcomes

    async def _publish(self, chunk: list[NamedPhoto]) -> None:
        first = chunk[0]
        parts = [one.part for one in chunk]
        # The same photos give the same id: a publish retried after a lost acknowledgement is one.
        digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]
        await self._audit.publish(
            KIND,
            actor=first.submitted_by,
            details={
                "import_id": first.import_id,
                "model": {"id": first.model[0], "version": first.model[1]},
                "records": [one.record for one in chunk],
            },
            event_id=f"{first.import_id}.enrolled.{digest}",
            parts=parts,
        )


def _within_budget(positions: list[int], enrolled: list[NamedPhoto]) -> Iterator[list[int]]:
    """``positions`` of ``enrolled`` in order, in runs whose records fit one event."""
    chunk: list[int] = []
    size = 0
    for at in positions:
        cost = len(json.dumps(enrolled[at].record)) + len(enrolled[at].part) + 8
        if chunk and size + cost > EVENT_BUDGET_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(at)
        size += cost
    if chunk:
        yield chunk

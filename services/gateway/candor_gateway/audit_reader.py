"""Reading the audit chain back: the gateway's quotas, reviews and exports are computed from it.

Reads wait, by default, until the chain holds every event this gateway has published (read your
writes), so a review just submitted or a search just made is counted by the next call.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypedDict, Unpack

from candor.audit.v1 import audit_pb2
from candor.common.v1 import common_pb2
from candor_kit import AuditPublisher, Bus, ServiceUnavailable, subjects
from candor_kit.audit_events import enrolment_event_id, expunge_event_id, record_details

#: Records fetched per query.
PAGE = 1000


class Filters(TypedDict, total=False):
    """What ``AuditReader.records`` and ``pages`` select by, and how fresh a read must be."""

    kinds: Iterable[str]
    case_number: str
    case_numbers: Iterable[str]
    actor: str
    event_id: str
    event_ids: Iterable[str]
    since: dt.datetime | None
    at_most: int | None
    fresh: bool
    everyones: bool


class AuditReader:
    """Filtered, paged reads of the audit chain over NATS."""

    def __init__(self, bus: Bus, publisher: AuditPublisher, timeout_s: float) -> None:
        self._bus = bus
        self._publisher = publisher
        self._timeout = timeout_s

    async def records(self, *, on_behalf_of: str, **filters: Unpack[Filters]) -> list[audit_pb2.AuditRecord]:
        """Matching records, oldest first: all of them, or the first ``at_most``. The audit
        service records each read as made for the user ``on_behalf_of``. ``fresh`` waits for what
        this gateway published; ``everyones`` for everything on the stream now, other gateway
        replicas' events included."""
        found: list[audit_pb2.AuditRecord] = []
        async for page in self.pages(on_behalf_of=on_behalf_of, **filters):
            found.extend(page)
        return found

    async def pages(
        self,
        *,
        on_behalf_of: str,
        kinds: Iterable[str] = (),
        case_number: str = "",
        case_numbers: Iterable[str] = (),
        actor: str = "",
        event_id: str = "",
        event_ids: Iterable[str] = (),
        since: dt.datetime | None = None,
        at_most: int | None = None,
        fresh: bool = True,
        everyones: bool = False,
    ) -> AsyncIterator[list[audit_pb2.AuditRecord]]:
        """The matching records of ``records``, a page (one read) at a time, so that a long read
        need not hold them all. ``event_ids`` and ``case_numbers`` select any of several (with
        ``event_id`` and ``case_number``: either)."""
        wait_for = self._publisher.last_sequence if fresh else 0
        if everyones:
            info = await self._bus.jetstream.stream_info(subjects.AUDIT_STREAM)
            wait_for = max(wait_for, int(info.state.last_seq))
        query = audit_pb2.QueryRequest(
            origin=common_pb2.Origin(actor=on_behalf_of),
            kinds=sorted(kinds),
            case_number=case_number,
            case_numbers=sorted(case_numbers),
            actor=actor,
            event_id=event_id,
            event_ids=sorted(event_ids),
            wait_for_stream_sequence=wait_for,
        )
        if since is not None:
            query.since.FromDatetime(since)
        got = 0
        while at_most is None or got < at_most:
            query.limit = PAGE if at_most is None else min(PAGE, at_most - got)
            page = await self._bus.request(subjects.AUDIT_QUERY, query, audit_pb2.QueryResponse, self._timeout)
            if page.records:
                got += len(page.records)
                query.after_sequence = page.records[-1].sequence
                yield list(page.records)
            if not page.more or not page.records:
                break

    async def found(
        self, *, on_behalf_of: str, kind: str, event_id: str, everyones: bool = False
    ) -> dict[str, Any] | None:
        """The details of the record of ``kind`` made under ``event_id``, or None when the chain
        holds none (``everyones``: once it holds everything on the stream now, other services'
        events included)."""
        records = await self.records(
            on_behalf_of=on_behalf_of, kinds=[kind], event_id=event_id, at_most=1, everyones=everyones
        )
        return record_details(records[0]) if records else None

    async def recorded(self, *, on_behalf_of: str, kind: str, event_id: str) -> dict[str, Any]:
        """The details of the record of ``kind`` made under ``event_id``: what a call redone under
        its first run's id (its gateway died before answering) answers. ServiceUnavailable while the
        record is not in the chain yet."""
        details = await self.found(on_behalf_of=on_behalf_of, kind=kind, event_id=event_id)
        if details is None:
            raise ServiceUnavailable("this call's record is not in the audit chain yet; retry shortly")
        return details

    async def expunged_records(self, on_behalf_of: str, operation_id: str) -> int:
        """How many records an expunge's earlier run had the matcher delete (0: none did): what an
        expunge redone under its id (its first run cut short after the matcher's step) records and
        answers, when the matcher finds nothing left."""
        found = await self.found(
            on_behalf_of=on_behalf_of,
            kind="matcher.subject_deleted",
            event_id=expunge_event_id(operation_id),
            everyones=True,
        )
        return int(found.get("records", 0)) if found else 0

    async def enrolment_created(self, on_behalf_of: str, operation_id: str, model_id: str) -> bool:
        """Whether an enrolment's earlier run had the matcher create its record with ``model_id``:
        what an enrolment redone under its id (its first run cut short after the matcher's step)
        records and answers, when the matcher finds the record made."""
        found = await self.found(
            on_behalf_of=on_behalf_of,
            kind="matcher.enrolled",
            event_id=enrolment_event_id(operation_id, model_id),
            everyones=True,
        )
        return bool(found and found.get("created"))

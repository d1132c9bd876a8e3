"""The event feed: lifecycle events for integrations, published from the audit chain.

Once a record of a lifecycle kind is in the chain, the audit service publishes it as a
``candor.events.v1.LifecycleEvent`` on the ``CANDOR_EVENTS`` stream (subject
``candor.events.v1.<kind>``), with the record's sequence as the message id. Where the feed stands
is read back from the stream itself (the record sequence of its last message), so a restart, a
second audit replica or a publish that failed half-way resumes where the stream ends: nothing is
skipped, and a record published twice within the stream's duplicate window is stored once (past
it, followers deduplicate by ``record_sequence``: the feed is at least once). Because the feed is
made from the chain, it never says what the chain does not, and it carries what a record's details
allow an integration to see: ids, counts and statuses, never photos, embeddings or distances.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from candor.events.v1 import events_pb2
from candor.gateway.v1 import gateway_pb2
from candor_audit.chain import SqlAuditChain
from candor_kit import metrics
from candor_kit.audit_records import StoredRecord, rfc3339
from candor_kit.jetstream_setup import ensure_stream
from candor_kit.subjects import EVENTS_PREFIX, EVENTS_STREAM

log = structlog.get_logger("candor.audit.feed")

#: The audit kinds that go on the feed.
FEED_KINDS = (
    "search.completed",
    "review.confirmed",
    "review.rejected",
    "review.disputed",
    "probe.deleted",
    "subject.deleted",
    "record.deleted",
    "gallery.import_finished",
)
#: A review outcome's candidate status.
STATUSES = {
    "review.confirmed": gateway_pb2.CANDIDATE_STATUS_LEAD,
    "review.rejected": gateway_pb2.CANDIDATE_STATUS_REJECTED,
    "review.disputed": gateway_pb2.CANDIDATE_STATUS_DISPUTED,
}
#: How long the stream recognises a record published twice (two audit replicas racing, a retry
#: after a lost acknowledgement).
DUPLICATE_WINDOW_S = 600.0
#: Records published in one round.
ROUND = 256


def message_id(sequence: int) -> str:
    """The feed message id of the record at ``sequence`` (JetStream stores one message per id)."""
    return f"candor-record-{sequence}"


def lifecycle_event(record: StoredRecord) -> events_pb2.LifecycleEvent:
    """The feed's event for one chain record of a lifecycle kind."""
    entry = record.entry
    try:
        loaded = json.loads(entry.details_json or "{}")
    except ValueError:
        loaded = {}
    details: dict[str, Any] = loaded if isinstance(loaded, dict) else {}
    event = events_pb2.LifecycleEvent(
        record_sequence=record.sequence,
        kind=entry.kind,
        event_id=entry.event_id,
        actor=entry.actor,
        case_number=entry.case_number,
        purpose=entry.purpose,
    )
    with contextlib.suppress(ValueError):
        event.occurred_at.FromJsonString(entry.occurred_at)

    def text(name: str) -> str:
        value = details.get(name)
        return value if isinstance(value, str) else ""

    if entry.kind == "search.completed":
        event.search_id = entry.event_id
        candidates = details.get("candidates")
        event.candidates = len(candidates) if isinstance(candidates, list) else 0
    elif entry.kind in STATUSES:
        event.search_id, event.subject_id = text("search_id"), text("subject_id")
        rank = details.get("rank")
        event.rank = rank if isinstance(rank, int) else 0
        event.status = STATUSES[entry.kind]
        event.settled_by_supervisor = bool(details.get("settled_by"))
    elif entry.kind == "probe.deleted":
        event.search_id, event.reason = text("search_id"), text("reason")
    elif entry.kind in ("subject.deleted", "record.deleted"):
        event.subject_id, event.record_id, event.reason = text("subject_id"), text("record_id"), text("reason")
    elif entry.kind == "gallery.import_finished":
        event.import_id = text("import_id")
        for name in ("total", "enrolled", "duplicates", "rejected", "failed"):
            count = details.get(name)
            setattr(event.import_counts, name, count if isinstance(count, int) else 0)
    return event


class EventFeed:
    """Publishes the chain's lifecycle records to the feed's stream, in chain order."""

    def __init__(self, jetstream: JetStreamContext, chain: SqlAuditChain, replicas: int, max_age_days: int) -> None:
        self._js = jetstream
        self._chain = chain
        self._replicas = replicas
        self._max_age = dt.timedelta(days=max_age_days)
        #: The highest record sequence this replica knows to be on the feed.
        self._published = 0
        #: The stream's last message sequence when last read, and the record it carries.
        self._stream_end = (0, 0)

    async def ensure(self) -> None:
        """Create the feed's stream if missing: file storage, events kept ``max_age_days``, the
        oldest discarded first, duplicates recognised for ten minutes."""
        config = StreamConfig(
            name=EVENTS_STREAM,
            subjects=[f"{EVENTS_PREFIX}.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_age=self._max_age.total_seconds(),
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=self._replicas,
        )
        # Already there with another config (an operator's retention, say): kept.
        await ensure_stream(self._js, config)

    async def _position(self) -> tuple[int, str]:
        """The record sequence the feed's stream ends at, and, when the stream holds nothing,
        the time from which records belong on it (those older would have aged out)."""
        info = await self._js.stream_info(EVENTS_STREAM)
        if not info.state.messages:
            since = Timestamp()
            since.FromDatetime(dt.datetime.now(dt.UTC) - self._max_age)
            return 0, rfc3339(since)
        if info.state.last_seq != self._stream_end[0]:
            # Moved (this replica's publishing or another's): read which record it ends at.
            last = await self._js.get_msg(EVENTS_STREAM, seq=info.state.last_seq)
            event = events_pb2.LifecycleEvent()
            event.ParseFromString(last.data or b"")
            self._stream_end = (info.state.last_seq, int(event.record_sequence))
        return self._stream_end[1], ""

    async def publish_pending(self) -> int:
        """Publish the lifecycle records the feed does not hold yet (up to one round of them);
        returns how many were published. Raises when the stream cannot be reached: what was not
        published waits in the chain for the next round."""
        ends_at, since = await self._position()
        after = max(ends_at, self._published)
        records = await asyncio.to_thread(self._chain.query, "", "", since, "", ROUND, after, FEED_KINDS)
        for record in records:
            ack = await self._js.publish(
                f"{EVENTS_PREFIX}.{record.entry.kind}",
                lifecycle_event(record).SerializeToString(),
                stream=EVENTS_STREAM,
                headers={"Nats-Msg-Id": message_id(record.sequence)},
            )
            metrics.FEED_EVENTS.labels(record.entry.kind, "duplicate" if ack.duplicate else "published").inc()
            self._published = record.sequence
        return len(records)

    async def measure_followers(self) -> None:
        """Set each follower's backlog (events not yet given to it, and given but unacknowledged)."""
        consumers = await self._js.consumers_info(EVENTS_STREAM)
        metrics.FEED_CONSUMER_PENDING.clear()
        metrics.FEED_CONSUMER_UNACKED.clear()
        for consumer in consumers:
            metrics.FEED_CONSUMER_PENDING.labels(consumer.name).set(consumer.num_pending or 0)
            metrics.FEED_CONSUMER_UNACKED.labels(consumer.name).set(consumer.num_ack_pending or 0)


async def run_feed(
    feed: EventFeed, paused: Callable[[], bool], appended: asyncio.Event, stop: asyncio.Event, idle_s: float = 1.0
) -> None:
    """Publish the feed until stopped: after each append (``appended``), or every ``idle_s``; not
    while ``paused()`` (a broken chain is not published from). Followers' backlogs every 15 s."""
    loop = asyncio.get_running_loop()
    measured = 0.0
    while not stop.is_set():
        published = 0
        appended.clear()
        if not paused():
            try:
                published = await feed.publish_pending()
                metrics.FEED_FAILING.set(0)
            except Exception as exc:  # noqa: BLE001
                # NATS reconnecting or the stream out of reach: the records wait in the chain.
                metrics.FEED_FAILING.set(1)
                log.warning("feed_publish_failed", error=str(exc)[:300])
        if loop.time() - measured >= 15:
            measured = loop.time()
            with contextlib.suppress(Exception):
                await feed.measure_followers()
        if published >= ROUND:
            continue  # more wait
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_first(appended, stop), idle_s)


async def _first(*events: asyncio.Event) -> None:
    """Return when any of ``events`` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()

"""Audit events: the stream they travel on and the publisher every service uses."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from candor.audit.v1 import audit_pb2
from candor_kit.bus import Bus, keyed_message_id
from candor_kit.errors import InvalidInput, PreconditionFailed
from candor_kit.jetstream_setup import ensure_stream
from candor_kit.subjects import AUDIT_DEAD_LETTER, AUDIT_STREAM, ROLES, audit_subject
from candor_kit.subjects import AUDIT_EVENT_PREFIX as AUDIT_SUBJECT_PREFIX
from candor_kit.telemetry import current_trace_id

__all__ = [
    "AUDIT_DEAD_LETTER",
    "AUDIT_STREAM",
    "AUDIT_SUBJECT_PREFIX",
    "MAX_EVENT_BYTES",
    "MAX_PART_CHARS",
    "PARTS",
    "AlreadyRecorded",
    "AuditPublisher",
    "audit_message_id",
    "enrolment_event_id",
    "ensure_audit_stream",
    "expunge_event_id",
]

#: The largest audit event the chain takes: ids, hashes and counts fit many times over; an event
#: beyond it is refused by the audit service (and by a publisher before it is sent).
MAX_EVENT_BYTES = 64 * 1024
#: The key of an event's details that lists its parts: the items one event names together (an
#: import's photos enrolled in one go), each named by one record of the chain however often an
#: event names it again (a redelivery after a crash).
PARTS = "parts"
#: The longest part id an event may list.
MAX_PART_CHARS = 200


def audit_message_id(key: bytes, kind: str, event_id: str) -> str:
    """The stream message id (Nats-Msg-Id) of the event ``kind``/``event_id`` from the publisher
    holding ``key`` (``Bus.message_key``), keyed (``keyed_message_id``) because many event ids can
    be worked out in advance: a reviewer's analysis of a search is ``<search>/analysis/<who>``, and
    the matcher sees every search id. With the event id as the message id, the matcher's user could
    store an event of its own under it first, and the reviewer's was recorded nowhere."""
    return keyed_message_id(key, kind, event_id)


def expunge_event_id(operation_id: str) -> str:
    """The event id of the matcher's record of the records an expunge deleted, under the expunge's
    operation id: a gateway redoing the expunge (its first run cut short after the matcher's step)
    finds nothing left to delete, and reads what was deleted from this record."""
    return f"matcher-expunge/{operation_id}"


def enrolment_event_id(operation_id: str, model_id: str) -> str:
    """The event id of the matcher's record of the record an enrolment created with ``model_id``,
    under the enrolment's operation id: a gateway redoing the enrolment (its first run cut short
    after the matcher's step) finds the record there already, and reads here that it made it."""
    return f"matcher-enrol/{operation_id}/{model_id}"


async def ensure_audit_stream(bus: Bus, replicas: int = 1) -> None:
    """Create the audit stream if missing: file storage, nothing discarded, duplicates removed,
    ``replicas`` copies across a JetStream cluster."""
    config = StreamConfig(
        num_replicas=replicas,
        name=AUDIT_STREAM,
        subjects=[f"{AUDIT_SUBJECT_PREFIX}.>"],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.NEW,
        duplicate_window=120.0,
    )
    # Already there with another config (an operator's retention, say): kept.
    await ensure_stream(bus.jetstream, config)


class AlreadyRecorded(PreconditionFailed):
    """The audit stream already held an event with this id: the work it records was done before."""


#: Where a publisher stores an event it has made: (subject, event) -> whether it was stored now
#: (False: an event with its id was stored before); raises when it cannot store it.
EventStore = Callable[[str, audit_pb2.AuditEvent], Awaitable[bool]]


class AuditPublisher:
    """Publishes audit events durably; a failed publish raises, so callers fail closed."""

    def __init__(self, bus: Bus, source: str, store: EventStore | None = None) -> None:
        """``source`` is the publishing service's name (a key of ``subjects.ROLES``): events go
        out on ``candor.audit.v1.event.<source>.<kind>``, the only audit subjects its NATS user
        may publish to. ``store`` stores each event instead of the audit stream (an outbox's
        ``write``, say); by default the event is stored on the stream before ``publish`` returns."""
        if source not in ROLES or not ROLES[source].audit_kinds:
            raise ValueError(f"{source!r} is not a service that writes audit events")
        self._bus = bus
        self.source = source
        self._store = store or self.publish_event
        #: The highest audit stream sequence this publisher's events were stored at: a reader that
        #: waits for it (QueryRequest.wait_for_stream_sequence) sees everything published here.
        self.last_sequence = 0

    async def publish(
        self,
        kind: str,
        *,
        actor: str,
        case_number: str = "",
        purpose: str = "",
        details: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        first: bool = False,
        parts: Sequence[str] = (),
    ) -> str:
        """Store one event durably and return its id; with ``first``, AlreadyRecorded when the
        stream already held an event with this ``event_id`` (work done before under the same id).
        ``parts`` names the items the event records together (under ``details[PARTS]``): the chain
        stores an event whose every part it already names as a repeat of that record.

        ``details`` must never hold images, embeddings or tokens: hashes and ids only.
        """
        occurred = Timestamp()
        occurred.GetCurrentTime()
        event = audit_pb2.AuditEvent(
            event_id=event_id or str(uuid.uuid4()),
            kind=kind,
            occurred_at=occurred,
            actor=actor,
            case_number=case_number,
            purpose=purpose,
            trace_id=current_trace_id(),
            details_json=json.dumps(
                {**(details or {}), **({PARTS: list(parts)} if parts else {})}, sort_keys=True, separators=(",", ":")
            ),
        )
        if event.ByteSize() > MAX_EVENT_BYTES:
            raise InvalidInput(f"the {kind} audit event is {event.ByteSize()} bytes; the limit is {MAX_EVENT_BYTES}")
        if not await self._store(audit_subject(self.source, kind), event) and first:
            raise AlreadyRecorded(f"the {kind} event {event.event_id} was recorded before")
        return event.event_id

    async def publish_event(self, subject: str, event: audit_pb2.AuditEvent) -> bool:
        """Store an event on the audit stream (under ``audit_message_id``: stored once); False when
        the stream already held it."""
        msg_id = audit_message_id(self._bus.message_key, event.kind, event.event_id)
        sequence, duplicate = await self._bus.publish_durable(subject, event, msg_id=msg_id)
        self.last_sequence = max(self.last_sequence, sequence)
        return not duplicate


def record_details(record: audit_pb2.AuditRecord) -> dict[str, Any]:
    """A record's details as a dict; unreadable details are kept as text, never dropped."""
    try:
        details = json.loads(record.event.details_json or "{}")
    except ValueError:
        return {"unreadable_details": record.event.details_json}
    return details if isinstance(details, dict) else {"details": details}

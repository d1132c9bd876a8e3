"""Audit events as the chain takes them: times in the chain's fixed form, the checks an incoming
event meets (well formed, not too large), and the record that stands in for a refused one.

Shared by the service that appends, the check of the stream against the chain, and the export's
offline checks, so each reads an event exactly as the appender did.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from google.protobuf.timestamp_pb2 import Timestamp

from candor.audit.v1 import audit_pb2
from candor_audit.chain import AuditEntry
from candor_kit import InvalidInput
from candor_kit.audit_events import MAX_EVENT_BYTES

#: The record of an audit event refused for its publisher (audit_publisher_problem).
REFUSED_KIND = "audit.event_refused"


#: The seconds a protobuf Timestamp may hold: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
TIMESTAMP_SECONDS = range(-62_135_596_800, 253_402_300_800)


def rfc3339(timestamp: Timestamp) -> str:
    """A fixed-width UTC time string, so text order is time order; InvalidInput outside the range
    a Timestamp may hold (a sender's, not the service's, mistake)."""
    if timestamp.seconds not in TIMESTAMP_SECONDS or not 0 <= timestamp.nanos < 1_000_000_000:
        raise InvalidInput("a timestamp is outside 0001-01-01 to 9999-12-31 or has invalid nanoseconds")
    moment = dt.datetime.fromtimestamp(timestamp.seconds, tz=dt.UTC).replace(microsecond=timestamp.nanos // 1000)
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def now_rfc3339() -> str:
    """The current time as the chain writes it."""
    now = Timestamp()
    now.GetCurrentTime()
    return rfc3339(now)


def timestamp_of(text: str) -> Timestamp:
    """The Timestamp of a time string the chain wrote."""
    stamp = Timestamp()
    stamp.FromDatetime(dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC))
    return stamp


def entry_from_event(event: audit_pb2.AuditEvent) -> AuditEntry:
    """Validate an incoming event and turn it into a chain entry."""
    if not event.event_id or not event.kind or not event.HasField("occurred_at"):
        raise InvalidInput("audit event lacks event_id, kind or occurred_at")
    return AuditEntry(
        event_id=event.event_id,
        kind=event.kind,
        occurred_at=rfc3339(event.occurred_at),
        actor=event.actor,
        case_number=event.case_number,
        purpose=event.purpose,
        trace_id=event.trace_id,
        details_json=event.details_json or "{}",
    )


#: How much of a refused event's subject and claims its refusal record keeps.
REFUSED_FIELD_CHARS = 200


def refused_entry(subject: str, event: audit_pb2.AuditEvent, problem: str, now: str) -> AuditEntry:
    """The chain entry that records a refused audit event: where it came from and what it claimed,
    bounded, never its details."""

    def bounded(text: str) -> str:
        return ascii(text[:REFUSED_FIELD_CHARS])[1:-1]

    details = {
        "subject": bounded(subject),
        "claimed_kind": bounded(event.kind),
        "claimed_actor": bounded(event.actor),
        "claimed_event_id": bounded(event.event_id),
        "reason": problem,
    }
    return AuditEntry(
        # Its own id, derived from the claimed one, so a redelivery is stored once and the claim
        # cannot take the id of the genuine event it imitates.
        event_id="refused." + hashlib.sha256(f"{subject}\n{event.event_id}".encode()).hexdigest(),
        kind=REFUSED_KIND,
        occurred_at=now,
        actor="service:audit",
        case_number="",
        purpose="",
        trace_id=event.trace_id if len(event.trace_id) == 32 else "",
        details_json=json.dumps(details, sort_keys=True, separators=(",", ":")),
    )


def size_problem(data: bytes) -> str | None:
    """Why an audit message is too large for the chain, or None."""
    if len(data) > MAX_EVENT_BYTES:
        return f"the event is {len(data)} bytes; the limit is {MAX_EVENT_BYTES}"
    return None

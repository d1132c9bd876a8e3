"""How the audit log answers a read: records and checkpoints in their wire form, pages within a
size far below NATS's message limit, and the record each query of the chain leaves in it."""

from __future__ import annotations

import json
import uuid

from candor.audit.v1 import audit_pb2
from candor_kit import current_trace_id
from candor_kit.audit_records import AuditEntry, StoredRecord, rfc3339, timestamp_of
from candor_kit.audit_signing import Checkpoint

#: The longest text a query may filter by or name as its origin (event ids included).
MAX_TEXT_CHARS = 256


def record_proto(record: StoredRecord) -> audit_pb2.AuditRecord:
    """The wire form of a stored record."""
    entry = record.entry
    return audit_pb2.AuditRecord(
        sequence=record.sequence,
        event=audit_pb2.AuditEvent(
            event_id=entry.event_id,
            kind=entry.kind,
            occurred_at=timestamp_of(entry.occurred_at),
            actor=entry.actor,
            case_number=entry.case_number,
            purpose=entry.purpose,
            trace_id=entry.trace_id,
            details_json=entry.details_json,
        ),
        recorded_at=timestamp_of(record.recorded_at),
        previous_hash=record.previous_hash,
        record_hash=record.record_hash,
        key_id=record.key_id,
        signature=record.signature,
    )


def checkpoint_proto(checkpoint: Checkpoint) -> audit_pb2.Checkpoint:
    """The wire form of a checkpoint."""
    return audit_pb2.Checkpoint(
        sequence=checkpoint.sequence,
        head_hash=checkpoint.head_hash,
        made_at=checkpoint.made_at,
        key_id=checkpoint.key_id,
        signature=checkpoint.signature,
    )


#: The records of one query answer, at most, in bytes: far below NATS's message limit, so any
#: volume of records is read by paging, never refused for its size.
PAGE_BYTES = 4 * 1024 * 1024


def page_of(records: list[StoredRecord], limit: int) -> audit_pb2.QueryResponse:
    """A query's answer: up to ``limit`` records and PAGE_BYTES, and whether more match."""
    page = audit_pb2.QueryResponse()
    size = 0
    for record in records[:limit]:
        wire = record_proto(record)
        size += wire.ByteSize()
        if page.records and size > PAGE_BYTES:
            page.more = True
            return page
        page.records.append(wire)
    page.more = len(records) > limit
    return page


QUERIED_KIND = "audit.queried"


def query_entry(request: audit_pb2.QueryRequest, now: str) -> AuditEntry:
    """The chain entry that records one read of the chain: for whom, and what it asked for."""
    origin = request.origin
    asked = {
        "case_number": request.case_number,
        "actor": request.actor,
        "kinds": list(request.kinds),
        "event_id": request.event_id,
        "event_ids": list(request.event_ids),
        "case_numbers": list(request.case_numbers),
        "since": rfc3339(request.since) if request.HasField("since") else "",
        "until": rfc3339(request.until) if request.HasField("until") else "",
        "after_sequence": request.after_sequence,
        "limit": request.limit,
    }
    return AuditEntry(
        event_id=str(uuid.uuid4()),
        kind=QUERIED_KIND,
        occurred_at=now,
        actor=origin.actor or "unstated",
        case_number="",
        purpose=origin.purpose,
        trace_id=current_trace_id(),
        details_json=json.dumps(
            {"request_id": origin.request_id, "asked": asked}, sort_keys=True, separators=(",", ":")
        ),
    )

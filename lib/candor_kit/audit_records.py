"""The audit chain's records: an event as the chain takes it (times in the chain's fixed form, the
checks an incoming event meets, the record that stands in for a refused one), each record's hash
over the one before, and the verification walk over records, signatures and checkpoints.

Shared by the audit service that appends (candor_audit.chain stores the records), the check of the
stream against the chain, and the CLI's offline checks of a case export, so each reads an event
and verifies a record exactly as the appender did.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.timestamp_pb2 import Timestamp

from candor.audit.v1 import audit_pb2
from candor_kit.audit_events import MAX_EVENT_BYTES, MAX_PART_CHARS, PARTS
from candor_kit.audit_signing import Checkpoint, checkpoint_message, record_message, verify_signature
from candor_kit.errors import InvalidInput

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """The content of one event, as the chain hashes it. Times are RFC 3339 UTC strings."""

    event_id: str
    kind: str
    occurred_at: str
    actor: str
    case_number: str
    purpose: str
    trace_id: str
    details_json: str


@dataclass(frozen=True)
class StoredRecord:
    """An entry with its place in the chain."""

    sequence: int
    entry: AuditEntry
    recorded_at: str
    previous_hash: str
    record_hash: str
    key_id: str = ""
    signature: str = ""


@dataclass(frozen=True)
class Verification:
    """The outcome of walking the chain."""

    ok: bool
    records_checked: int
    first_bad_sequence: int = 0
    problem: str = ""
    head_hash: str = GENESIS_HASH
    signatures_checked: int = 0
    checkpoints_checked: int = 0


def service_entry(kind: str, event_id: str, details: Mapping[str, object], now: str) -> AuditEntry:
    """A record the audit service makes itself (an alarm, a folded count). Alarms derive their id
    from what raised them, so reading the same message again records nothing more."""
    return AuditEntry(
        event_id=event_id,
        kind=kind,
        occurred_at=now,
        actor="service:audit",
        case_number="",
        purpose="",
        trace_id="",
        details_json=json.dumps(details, sort_keys=True, separators=(",", ":")),
    )


def record_hash(previous_hash: str, sequence: int, entry: AuditEntry, recorded_at: str) -> str:
    """SHA-256 over the previous hash and the record's canonical JSON."""
    body: dict[str, Any] = {"sequence": sequence, "recorded_at": recorded_at, **asdict(entry)}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(previous_hash.encode("ascii") + b"\n" + canonical.encode("utf-8")).hexdigest()


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


def part_name(kind: str, part: str) -> str:
    """The chain's name of one part of an event of ``kind``. Scoped by kind, which only the
    event's own publisher may write, so that no service can claim another's parts in advance."""
    return f"part:{kind}/{part}"


def listed_parts(details_json: str) -> list[str] | None:
    """The part ids an event's details list, in order and once each; None when it lists none.
    InvalidInput when the list is not of part ids."""
    if f'"{PARTS}"' not in details_json:  # most events: no need to parse
        return None
    try:
        details = json.loads(details_json)
    except ValueError:
        return None
    if not isinstance(details, dict) or PARTS not in details:
        return None
    listed = details[PARTS]
    if not isinstance(listed, list) or not listed:
        raise InvalidInput(f"an audit event's {PARTS} must be a non-empty list of ids")
    for part in listed:
        if not isinstance(part, str) or not 0 < len(part) <= MAX_PART_CHARS:
            raise InvalidInput(f"each of an audit event's {PARTS} must be an id of 1 to {MAX_PART_CHARS} characters")
    return list(dict.fromkeys(listed))


def event_parts(kind: str, details_json: str) -> list[str]:
    """The chain's names of the parts an event of ``kind`` lists in its details (none for most)."""
    try:
        listed = listed_parts(details_json)
    except InvalidInput:  # checked when the event came in; a record refused for it lists none
        return []
    return [part_name(kind, part) for part in listed or ()]


def entry_from_event(event: audit_pb2.AuditEvent) -> AuditEntry:
    """Validate an incoming event and turn it into a chain entry."""
    if not event.event_id or not event.kind or not event.HasField("occurred_at"):
        raise InvalidInput("audit event lacks event_id, kind or occurred_at")
    listed_parts(event.details_json)
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


def verify_records(
    records: Iterable[StoredRecord],
    keys: Mapping[str, Ed25519PublicKey],
    checkpoints: Iterable[Checkpoint] = (),
) -> Verification:
    """Check each record's sequence, link, hash and signature in order, and the chain's hash at each
    checkpoint; name the first record that fails."""
    vouched: dict[int, Checkpoint] = {}
    for checkpoint in sorted(checkpoints, key=lambda c: c.sequence):
        message = checkpoint_message(checkpoint.sequence, checkpoint.head_hash, checkpoint.made_at)
        if not verify_signature(keys, checkpoint.key_id, checkpoint.signature, message):
            problem = f"the checkpoint of record {checkpoint.sequence} has no valid signature"
            return Verification(False, 0, checkpoint.sequence, problem)
        vouched[checkpoint.sequence] = checkpoint
    expected_sequence, previous, checked, matched = 1, GENESIS_HASH, 0, 0

    def failed(sequence: int, problem: str) -> Verification:
        return Verification(False, checked, sequence, problem, previous, checked, matched)

    for record in records:
        if record.sequence != expected_sequence:
            return failed(expected_sequence, f"record {expected_sequence} is missing")
        if record.previous_hash != previous:
            return failed(record.sequence, "previous-hash link is broken (record removed or reordered)")
        if record_hash(previous, record.sequence, record.entry, record.recorded_at) != record.record_hash:
            return failed(record.sequence, "record content was altered")
        if not verify_signature(
            keys, record.key_id, record.signature, record_message(record.sequence, record.record_hash)
        ):
            return failed(record.sequence, "record has no valid signature from the audit key (rewritten)")
        checkpoint = vouched.get(record.sequence)
        if checkpoint is not None:
            if checkpoint.head_hash != record.record_hash:
                return failed(
                    record.sequence, f"record differs from the checkpoint made at {checkpoint.made_at} (rewritten)"
                )
            matched += 1
        previous = record.record_hash
        expected_sequence += 1
        checked += 1
    beyond = [sequence for sequence in vouched if sequence >= expected_sequence]
    if beyond:
        problem = f"the chain ends at record {expected_sequence - 1}, but a checkpoint vouches for record {beyond[0]}"
        return failed(expected_sequence, problem + " (tail cut)")
    return Verification(True, checked, head_hash=previous, signatures_checked=checked, checkpoints_checked=matched)

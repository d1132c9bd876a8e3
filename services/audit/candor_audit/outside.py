"""What the audit service checks its chain against, outside the chain's own database.

- **The checkpoint stream.** Signed checkpoints of the head, which no NATS user may purge. A
  checkpoint is trusted only when it parses and carries a valid signature from the audit key; one
  that does not is refused and alarmed, never trusted (one junk message must not stop the log). The
  highest checkpoint ever kept vouches for the chain: publishing an older one again cannot lower it,
  and a checkpoint lower than one before it is an alarm.
- **The audit stream.** Every event it still holds and has settled must be found in the chain; the
  ones that are not (a tail cut after the newest checkpoint, say) are named as missing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from candor.audit.v1 import audit_pb2
from candor_kit import InvalidInput, metrics, subjects
from candor_kit.audit_events import AUDIT_STREAM, AUDIT_SUBJECT_PREFIX
from candor_kit.audit_records import AuditEntry, entry_from_event, event_parts, service_entry, size_problem
from candor_kit.audit_signing import Checkpoint, checkpoint_message, verify_signature
from candor_kit.bus import read_stream
from candor_kit.jetstream_setup import ensure_stream

log = structlog.get_logger("candor.audit")

#: The chain records of the checkpoint stream's alarms.
CHECKPOINT_REFUSED = "audit.checkpoint_refused"
CHECKPOINT_BACKWARDS = "audit.checkpoint_went_backwards"
#: Missing events named in a verification, at most.
MISSING_NAMED = 20


class CheckpointStream:
    """The chain's checkpoints kept in a JetStream stream, a second store beside the database.

    Whoever can rewrite the database (and its checkpoint table) cannot reach this stream, which no
    NATS user may purge or delete from; verifying against the highest checkpoint it holds catches a
    cut tail.
    """

    def __init__(self, jetstream: JetStreamContext, keys: Mapping[str, Ed25519PublicKey]) -> None:
        self._jetstream = jetstream
        self._keys = keys
        self._read_through = 0
        #: The highest valid checkpoint read so far.
        self.highest: Checkpoint | None = None

    async def ensure(self, replicas: int = 1) -> None:
        """Create the stream if missing: file storage, every checkpoint kept."""
        config = StreamConfig(
            name=subjects.AUDIT_CHECKPOINT_STREAM,
            subjects=[subjects.AUDIT_CHECKPOINT],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.NEW,
            num_replicas=replicas,
        )
        await ensure_stream(self._jetstream, config)  # one already there keeps an operator's limits

    async def keep(self, checkpoint: audit_pb2.Checkpoint) -> None:
        """Store one checkpoint (acknowledged by the server before this returns)."""
        await self._jetstream.publish(subjects.AUDIT_CHECKPOINT, checkpoint.SerializeToString(), timeout=5)

    async def read(self, now: str) -> list[AuditEntry]:
        """Read the checkpoints stored since the last read; returns the alarms they raise (as chain
        entries), and keeps the highest valid one in ``highest``."""
        alarms = []
        async for msg in read_stream(
            self._jetstream, subjects.AUDIT_CHECKPOINT_STREAM, subjects.AUDIT_CHECKPOINT, first=self._read_through + 1
        ):
            assert msg.metadata is not None
            position = msg.metadata.sequence.stream
            self._read_through = position
            checkpoint, problem = self._validated(msg.data)
            if checkpoint is None:
                metrics.AUDIT_ALARMS.labels("checkpoint_refused").inc()
                log.error("audit_checkpoint_refused", stream_sequence=position, problem=problem)
                details = {"stream_sequence": position, "reason": problem, "bytes": len(msg.data)}
                alarms.append(service_entry(CHECKPOINT_REFUSED, f"checkpoint.refused.{position}", details, now))
                continue
            if self.highest is not None and checkpoint.sequence < self.highest.sequence:
                metrics.AUDIT_ALARMS.labels("checkpoint_backwards").inc()
                log.error(
                    "audit_checkpoint_went_backwards",
                    stream_sequence=position,
                    sequence=checkpoint.sequence,
                    highest=self.highest.sequence,
                )
                details = {
                    "stream_sequence": position,
                    "sequence": checkpoint.sequence,
                    "highest_sequence": self.highest.sequence,
                }
                alarms.append(service_entry(CHECKPOINT_BACKWARDS, f"checkpoint.backwards.{position}", details, now))
                continue
            self.highest = checkpoint
        return alarms

    def _validated(self, data: bytes) -> tuple[Checkpoint | None, str]:
        """The checkpoint a message holds, or None and why it is not trusted."""
        try:
            kept = audit_pb2.Checkpoint.FromString(data)
        except DecodeError:
            return None, "not a checkpoint message"
        if kept.sequence < 1 or len(kept.head_hash) != 64:
            return None, "the checkpoint names no record"
        message = checkpoint_message(kept.sequence, kept.head_hash, kept.made_at)
        if not verify_signature(self._keys, kept.key_id, kept.signature, message):
            return None, "the checkpoint has no valid signature from the audit key"
        return Checkpoint(kept.sequence, kept.head_hash, kept.made_at, kept.key_id, kept.signature), ""


def genuine_event_id(subject: str, data: bytes) -> tuple[str, str, tuple[str, ...]] | None:
    """The event id, kind and parts (``event_parts``) of an audit stream message that the chain
    must hold as itself, or as a repeat of the records naming all its parts: a well-formed event
    from the service that owns its kind. None for anything the chain refuses."""
    if size_problem(data):
        return None
    try:
        event = audit_pb2.AuditEvent.FromString(data)
        entry = entry_from_event(event)
    except (DecodeError, InvalidInput):
        return None
    if subjects.audit_publisher_problem(subject, event.kind, event.event_id) is not None:
        return None
    return event.event_id, event.kind, tuple(event_parts(event.kind, entry.details_json))


@dataclass(frozen=True)
class Missing:
    """An event settled on the audit stream that the chain lacks."""

    stream_sequence: int
    event_id: str
    kind: str
    #: The parts it lists: an event whose every part the chain names is held as a repeat.
    parts: tuple[str, ...] = ()


class AuditStreamCheck:
    """Checks that every event the audit stream holds and has settled is in the chain."""

    def __init__(self, jetstream: JetStreamContext, settled_through: Callable[[], Awaitable[int]]) -> None:
        self._jetstream = jetstream
        self._settled_through = settled_through

    async def missing(
        self,
        present: Callable[[Iterable[tuple[str, str]]], Awaitable[set[tuple[str, str]]]],
        names: Callable[[Iterable[str]], Awaitable[set[str]]],
    ) -> tuple[list[Missing], int]:
        """The first MISSING_NAMED missing events, oldest first, and how many are missing in all.
        ``present`` says which events, (kind, event id) pairs, the chain holds, ``names`` which
        parts it names."""
        through = await self._settled_through()
        named: list[Missing] = []
        total = 0
        pending: list[Missing] = []

        async def check() -> None:
            nonlocal total
            held = await present((m.kind, m.event_id) for m in pending)
            parts = await names(part for m in pending if (m.kind, m.event_id) not in held for part in m.parts)
            for candidate in pending:
                repeat = bool(candidate.parts) and all(part in parts for part in candidate.parts)
                if (candidate.kind, candidate.event_id) not in held and not repeat:
                    total += 1
                    if len(named) < MISSING_NAMED:
                        named.append(candidate)
            pending.clear()

        if through:
            async for msg in read_stream(self._jetstream, AUDIT_STREAM, f"{AUDIT_SUBJECT_PREFIX}.>", last=through):
                assert msg.metadata is not None
                genuine = genuine_event_id(msg.subject, msg.data)
                if genuine is not None:
                    pending.append(Missing(msg.metadata.sequence.stream, *genuine))
                if len(pending) >= 1000:
                    await check()
            await check()
        if total:
            metrics.AUDIT_ALARMS.labels("events_missing").inc(total)
        return named, total


def missing_problem(named: list[Missing], total: int) -> str:
    """A verification's problem text for events missing from the chain."""
    first = named[0]
    return (
        f"{total} event(s) held on the audit stream are missing from the chain (records deleted after "
        f"the newest checkpoint?); the first: stream message {first.stream_sequence}, {first.kind} "
        f"{first.event_id}"
    )

"""The audit service: a JetStream consumer that appends to the chain, and Verify/Query APIs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence

import grpc
import structlog
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
)
from nats.js.errors import NotFoundError as NatsNotFoundError

from candor.audit.v1 import audit_pb2, audit_pb2_grpc
from candor_audit.answers import MAX_TEXT_CHARS, checkpoint_proto, page_of, query_entry
from candor_audit.chain import SqlAuditChain
from candor_audit.feed import EventFeed, run_feed
from candor_audit.outside import AuditStreamCheck, CheckpointStream, Missing, missing_problem
from candor_audit.refusals import RefusalFolder
from candor_audit.settings import AuditSettings
from candor_audit.watermark import StreamWatermark
from candor_kit import (
    Bus,
    InvalidInput,
    ServiceHost,
    ServiceUnavailable,
    ensure_audit_stream,
    metrics,
    rpc,
    settle_batch,
    subjects,
)
from candor_kit.audit_events import AUDIT_DEAD_LETTER, AUDIT_STREAM, AUDIT_SUBJECT_PREFIX
from candor_kit.audit_records import (
    AuditEntry,
    Verification,
    entry_from_event,
    now_rfc3339,
    refused_entry,
    rfc3339,
    size_problem,
)
from candor_kit.audit_signing import Checkpoint, Signer, case_manifest_message, case_records_sha256
from candor_kit.bus import Outcome, fetch_batch

VERIFY_SUBJECT = subjects.AUDIT_VERIFY
QUERY_SUBJECT = subjects.AUDIT_QUERY
CONSUMER = subjects.AUDIT_CONSUMER
#: The most event ids, and cases, one query may list (each query is recorded with what it asked).
MAX_LISTED = 1000
log = structlog.get_logger("candor.audit")


class AuditLog:
    """The chain behind the service's three doors: the stream, Verify and Query."""

    def __init__(
        self,
        chain: SqlAuditChain,
        signer: Signer,
        watermark: StreamWatermark | None = None,
        outside: CheckpointStream | None = None,
        stream: AuditStreamCheck | None = None,
    ) -> None:
        self._chain = chain
        self._signer = signer
        self._public_key_pem = signer.public_pem()
        self._last_published = 0
        self.watermark = watermark or StreamWatermark()
        #: The second store of checkpoints, outside the chain's database (None: the chain's own only).
        self._outside = outside
        #: The audit stream, whose settled events must all be in the chain (None: not checked).
        self._stream = stream
        self._refusals = RefusalFolder()
        #: Set after each append, to wake the event feed.
        self.appended = asyncio.Event()
        #: Why the chain failed verification; while set, nothing is appended (events wait on the
        #: stream) until someone examines the chain and restarts the service.
        self.broken = ""

    async def check(self) -> Verification:
        """Verify the whole chain against its own and the outside store's checkpoints, and against
        the events the stream still holds; a failure stops appending (``broken``)."""
        result, _ = await self._verified([])
        if not result.ok and not self.broken:
            self.broken = f"record {result.first_bad_sequence}: {result.problem}"
            log.error("audit_chain_broken", first_bad=result.first_bad_sequence, problem=result.problem)
        metrics.AUDIT_CHAIN_BROKEN.set(1 if self.broken else 0)
        return result

    async def _verified(self, kept: list[Checkpoint]) -> tuple[Verification, tuple[list[Missing], int]]:
        """Walk the chain with ``kept`` and the outside checkpoints, then look for settled stream
        events the chain lacks; the alarms the checkpoint stream raised are recorded when the
        chain holds."""
        alarms = await self._outside.read(now_rfc3339()) if self._outside is not None else []
        vouching = [self._outside.highest] if self._outside is not None and self._outside.highest else []
        result = await asyncio.to_thread(self._chain.verify, [*kept, *vouching])
        missing: tuple[list[Missing], int] = ([], 0)
        if result.ok and self._stream is not None:
            missing = await self._stream.missing(self._present, self._named)
            if missing[1]:
                problem = missing_problem(*missing)
                result = Verification(
                    False, result.records_checked, result.records_checked + 1, problem, result.head_hash,
                    result.signatures_checked, result.checkpoints_checked,
                )  # fmt: skip
        if result.ok and not self.broken:
            if alarms:
                await asyncio.to_thread(self._chain.append_many, [(alarm, alarm.occurred_at) for alarm in alarms])
        return result, missing

    async def _present(self, events: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        return await asyncio.to_thread(self._chain.present, list(events))

    async def _named(self, parts: Iterable[str]) -> set[str]:
        return set(await asyncio.to_thread(self._chain.named_parts, list(parts)))

    async def append_messages(self, messages: Sequence[Msg]) -> list[Outcome]:
        """Decode each message and append the batch to the chain in one transaction (one commit
        for a fetched batch, each event still its own record, in stream order). One outcome per
        message: None once it is in the chain (or was already: a duplicate delivery), InvalidInput
        when it is not an audit event. A failure of the chain itself (its database away) raises,
        so that the whole batch is delivered again; nothing of it was stored."""
        if self.broken:
            raise ServiceUnavailable(f"the audit chain is broken ({self.broken}); nothing is appended to it")
        now = now_rfc3339()
        outcomes: list[Outcome] = []
        entries: list[tuple[AuditEntry, str]] = []
        for msg in messages:
            try:
                entry = self._entry(msg, now)
            except InvalidInput as exc:
                outcomes.append(exc)
                continue
            outcomes.append(None)
            if entry is not None:
                entries.append((entry, now))
        if entries:
            with metrics.AUDIT_APPEND_SECONDS.time():
                stored = await asyncio.to_thread(self._chain.append_many, entries)
            for record in stored:
                if record is not None:
                    log.info("audit_appended", sequence=record.sequence, kind=record.entry.kind)
            if any(stored):
                self.appended.set()
        for msg, outcome in zip(messages, outcomes, strict=True):
            if outcome is None and msg.metadata is not None:
                self.watermark.mark(msg.metadata.sequence.stream)
        return outcomes

    def _entry(self, msg: Msg, now: str) -> AuditEntry | None:
        """What one message puts in the chain: its event, the record of a refused one, or nothing
        (a refusal folded into a count); InvalidInput when it is not an audit event."""
        event = audit_pb2.AuditEvent()
        try:
            event.ParseFromString(msg.data)
        except DecodeError as exc:
            raise InvalidInput("audit message is not an AuditEvent") from exc
        position = msg.metadata.sequence.stream if msg.metadata is not None else 0
        problem = size_problem(msg.data) or subjects.audit_publisher_problem(msg.subject, event.kind, event.event_id)
        if problem is None:
            return entry_from_event(event)
        # Not the publisher's to write: a forged review, say. It stays out of the chain, and the
        # attempt goes in instead (a flood of them is folded into a count).
        metrics.AUDIT_ALARMS.labels("event_refused").inc()
        if not self._refusals.admit(msg.subject, position, problem):
            return None
        log.warning("audit_event_refused", subject=msg.subject[:200], problem=problem)
        return refused_entry(msg.subject, event, problem, now)

    async def flush_refusals(self) -> None:
        """Append the counts of the refusals folded since the last flush (after each batch)."""
        if self.broken:
            return
        folded = self._refusals.flush(now_rfc3339())
        if folded:
            await asyncio.to_thread(self._chain.append_many, [(entry, entry.occurred_at) for entry in folded])
        for entry in folded:
            log.warning("audit_events_refused_folded", details=entry.details_json)

    async def verify(self, request: audit_pb2.VerifyRequest) -> audit_pb2.VerifyResponse:
        """Walk the chain: hashes, links, signatures, the chain's own, the outside store's and the
        caller's checkpoints, and the events the stream still holds."""
        kept = [Checkpoint(c.sequence, c.head_hash, c.made_at, c.key_id, c.signature) for c in request.checkpoints]
        result, (missing, missing_total) = await self._verified(kept)
        if not result.ok and not self.broken:
            # A caller's checkpoint may be forged; whether appending stops is decided by the
            # checkpoints the service trusts (its own and the outside store's) alone.
            await self.check()
        latest = await asyncio.to_thread(self._chain.checkpoint, now_rfc3339()) if result.ok else None
        manifest = None
        if result.ok and request.case_number:
            if len(request.case_number) > MAX_TEXT_CHARS:
                raise InvalidInput(f"case_number takes at most {MAX_TEXT_CHARS} characters")
            manifest = await self._case_manifest(request.case_number, result.records_checked)
        log.info(
            "audit_verified",
            ok=result.ok,
            records=result.records_checked,
            first_bad=result.first_bad_sequence,
            checkpoints=result.checkpoints_checked,
            missing=missing_total,
        )
        return audit_pb2.VerifyResponse(
            ok=result.ok,
            records_checked=result.records_checked,
            first_bad_sequence=result.first_bad_sequence,
            problem=result.problem,
            head_hash=result.head_hash,
            signatures_checked=result.signatures_checked,
            checkpoints_checked=result.checkpoints_checked,
            public_key_pem=self._public_key_pem,
            latest_checkpoint=checkpoint_proto(latest) if latest else None,
            missing=[
                audit_pb2.MissingEvent(stream_sequence=m.stream_sequence, event_id=m.event_id, kind=m.kind)
                for m in missing
            ],
            missing_events=missing_total,
            case_manifest=manifest,
        )

    async def _case_manifest(self, case_number: str, through: int) -> audit_pb2.CaseManifest:
        """The signed list of a case's records up to record ``through`` of a verified chain."""
        records = await asyncio.to_thread(self._chain.case_records, case_number, through)
        digest = case_records_sha256(records)
        sequences = [sequence for sequence, _ in records]
        made_at = now_rfc3339()
        message = case_manifest_message(case_number, through, sequences, digest, made_at)
        return audit_pb2.CaseManifest(
            case_number=case_number,
            through_sequence=through,
            sequences=sequences,
            records_sha256=digest,
            made_at=made_at,
            key_id=self._signer.key_id,
            signature=self._signer.sign(message),
        )

    async def checkpoint(self) -> audit_pb2.Checkpoint | None:
        """Sign the head if it moved, and store the checkpoint outside the database (where outside
        parties may also keep it); never over a broken chain."""
        if self.broken:
            return None
        made = await asyncio.to_thread(self._chain.checkpoint, now_rfc3339())
        if made is None or made.sequence == self._last_published:
            return None
        message = checkpoint_proto(made)
        if self._outside is not None:
            await self._outside.keep(message)
        self._last_published = made.sequence
        log.info("audit_checkpoint", sequence=made.sequence, head_hash=made.head_hash)
        return message

    async def _record_query(self, request: audit_pb2.QueryRequest) -> None:
        """Append the record of a read before answering it (a broken chain takes no record, and
        its reads are how the break is examined)."""
        for name in ("actor", "case_number", "purpose", "request_id"):
            if len(getattr(request.origin, name)) > MAX_TEXT_CHARS:
                raise InvalidInput(f"origin.{name} is longer than {MAX_TEXT_CHARS} characters")
        if len(request.case_number) > MAX_TEXT_CHARS or len(request.actor) > MAX_TEXT_CHARS:
            raise InvalidInput(f"case_number and actor take at most {MAX_TEXT_CHARS} characters")
        if len(request.kinds) > 50 or any(len(kind) > MAX_TEXT_CHARS for kind in request.kinds):
            raise InvalidInput(f"at most 50 kinds of at most {MAX_TEXT_CHARS} characters")
        if self.broken:
            log.warning("audit_query_unrecorded", reason="the chain is broken")
            return
        now = now_rfc3339()
        await asyncio.to_thread(self._chain.append, query_entry(request, now), now)

    async def query(self, request: audit_pb2.QueryRequest) -> audit_pb2.QueryResponse:
        """Filter records by case (or cases), actor, time, kind and event id (or ids); first waits,
        when asked, until the chain holds every message up to a stream sequence (read your writes)."""
        limit = request.limit or 1000
        if not 1 <= limit <= 10000:
            raise InvalidInput("limit must be between 1 and 10000")
        if max(len(request.event_ids), len(request.case_numbers)) > MAX_LISTED:
            raise InvalidInput(f"ask for at most {MAX_LISTED} event ids and {MAX_LISTED} cases at once")
        # One more than asked, to tell whether more match.
        if request.wait_for_stream_sequence:
            await self.watermark.reached(request.wait_for_stream_sequence)
        await self._record_query(request)
        records = await asyncio.to_thread(
            self._chain.query,
            request.case_number,
            request.actor,
            rfc3339(request.since) if request.HasField("since") else "",
            rfc3339(request.until) if request.HasField("until") else "",
            limit + 1,
            request.after_sequence,
            list(request.kinds),
            request.event_id,
            event_ids=list(request.event_ids),
            case_numbers=list(request.case_numbers),
        )
        return page_of(records, limit)


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """gRPC adapter."""

    def __init__(self, audit_log: AuditLog) -> None:
        self._log = audit_log

    @rpc("candor.audit.v1.AuditService")
    async def Verify(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._log.verify(request)

    @rpc("candor.audit.v1.AuditService")
    async def Query(self, request, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]  # noqa: N802
        return await self._log.query(request)


async def consume(bus: Bus, audit_log: AuditLog, batch: int, stop: asyncio.Event) -> None:
    """Pull events from the audit stream until stopped, a batch at a time, each batch appended in one
    transaction; each event is acked only once it is committed. Making the consumer is asked again
    until JetStream answers: this loop is the chain's only writer, and must not end with the
    service still up."""
    config = ConsumerConfig(
        durable_name=CONSUMER,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=30,
        max_deliver=20,
        max_ack_pending=1000,
    )
    subscription = None
    while subscription is None:
        try:
            subscription = await bus.pull_subscribe(
                f"{AUDIT_SUBJECT_PREFIX}.>", durable=CONSUMER, stream=AUDIT_STREAM, config=config
            )
        except Exception as exc:  # noqa: BLE001 - JetStream not answering yet: the events wait on the stream
            log.warning("audit_consumer_waiting", error=str(exc) or type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if stop.is_set():
                return
    await audit_log.watermark.refresh()
    while not stop.is_set():
        if audit_log.broken:
            # Events wait on the stream, unacknowledged, until the chain is examined.
            await asyncio.sleep(1)
            continue
        try:
            messages = await fetch_batch(subscription, batch, timeout=1, consumer=CONSUMER)
        except Exception as exc:  # noqa: BLE001 - the connection is reconnecting; try again shortly
            log.warning("audit_fetch_failed", error=str(exc))
            await asyncio.sleep(0.5)
            continue
        try:
            await settle_batch(messages, audit_log.append_messages, AUDIT_DEAD_LETTER, bus)
        except Exception as exc:  # noqa: BLE001 - an ack not sent: the event comes back and is stored once
            log.warning("audit_settle_failed", error=str(exc) or type(exc).__name__)
        try:
            await audit_log.flush_refusals()
        except Exception as exc:  # noqa: BLE001 - the counts are lost, the refused messages stay on the stream
            log.error("audit_refusal_counts_not_recorded", error=str(exc))
        if audit_log.watermark.gapped:
            await audit_log.watermark.refresh()


async def publish_checkpoints(bus: Bus, audit_log: AuditLog, interval_s: float, stop: asyncio.Event) -> None:
    """Checkpoint the head every ``interval_s`` while it moves, and once more on the way out."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        try:
            await audit_log.checkpoint()
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            log.warning("audit_checkpoint_failed", error=str(exc))
        if stop.is_set():
            return


async def serve(settings: AuditSettings, stop: asyncio.Event) -> None:
    """Run the audit service until ``stop`` is set."""
    signer = Signer.from_file(settings.signing_key_file)
    chain = await asyncio.to_thread(settings.open_chain, signer)
    try:
        async with ServiceHost(settings.common, ["candor.audit.v1.AuditService"]) as host:
            assert host.bus is not None
            jetstream = host.bus.jetstream

            async def settled_through() -> int:
                try:
                    info = await jetstream.consumer_info(AUDIT_STREAM, CONSUMER)
                except NatsNotFoundError:  # the writer has not made its consumer yet
                    return 0
                return int(info.ack_floor.stream_seq if info.ack_floor else 0)

            outside = CheckpointStream(jetstream, chain.public_keys)
            stream = AuditStreamCheck(jetstream, settled_through)
            audit_log = AuditLog(chain, signer, StreamWatermark(settled_through), outside, stream)
            audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(audit_log), host.grpc.server)
            await host.start_grpc()
            await ensure_audit_stream(host.bus, settings.stream_replicas)
            await outside.ensure(settings.stream_replicas)
            feed = EventFeed(jetstream, chain, settings.stream_replicas, settings.feed_max_age_days)
            await feed.ensure()
            # A chain that fails verification is not appended to: the service still answers Verify
            # and Query, so the break can be examined, but never reports SERVING.
            started = await audit_log.check()
            log.info("audit_chain_checked", ok=started.ok, records=started.records_checked)
            await host.bus.serve(VERIFY_SUBJECT, "audit", audit_pb2.VerifyRequest, audit_log.verify)
            await host.bus.serve(QUERY_SUBJECT, "audit", audit_pb2.QueryRequest, audit_log.query)
            consumer = asyncio.create_task(consume(host.bus, audit_log, settings.batch, stop))
            checkpoints = asyncio.create_task(
                publish_checkpoints(host.bus, audit_log, settings.checkpoint_interval_s, stop)
            )
            feed_task = asyncio.create_task(run_feed(feed, lambda: bool(audit_log.broken), audit_log.appended, stop))
            if not audit_log.broken:
                await host.mark_serving()
            await stop.wait()
            await consumer
            await checkpoints
            await feed_task
    finally:
        chain.close()

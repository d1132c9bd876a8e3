"""Bulk enrolment's plumbing: the work-queue streams, the results stream and the worker loop.

A photo of an import travels ``work.detect`` → ``work.embed`` → ``work.match``, each stage on its
own CANDOR_INGEST_<STAGE> work-queue stream (so a stage's NATS user reaches no other stage's work);
each stage is a durable pull consumer that any number of worker replicas share. A worker acks an
item only after handing it on (or settling it), so a worker killed mid-item loses nothing: the item
comes back after ``ack_wait``. A slow item is kept alive with ``in_progress``; a failing one is
retried with a growing delay; one that fails ``max_deliver`` times goes to the dead-letter stream
with an audit event and a FAILED result.

Every photo ends with an ItemResult on ``candor.ingest.v1.result.<import id>.<item>.<source>``,
where the source is the party that stored it (the gateway, or a stage), and no other service's NATS
user may publish there. The results stream keeps one message per subject, so a photo processed
twice still has one result from each party; the gateway takes the one from furthest along the line
(``result_stands``), so a compromised stage cannot overrule a later stage's result (a detector
calling an enrolled photo rejected would have had its stored photo taken back) nor claim an outcome
it cannot give (only the matcher enrols).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError
from nats.js.kv import KeyValue

from candor.ingest.v1 import ingest_pb2
from candor_kit import catalogue, subjects
from candor_kit.audit_events import AuditPublisher
from candor_kit.bus import MESSAGE_HEADER, Bus, fetch_batch, keyed_message_id
from candor_kit.errors import InvalidInput
from candor_kit.jetstream_setup import ensure_stream, open_bucket
from candor_kit.kv_entries import KeptChanging, change_entry
from candor_kit.metrics import IMPORT_ADVISORIES_UNSETTLED
from candor_kit.settings import EnvReader
from candor_kit.subjects import (
    IMPORT_ITEMS_BUCKET,
    IMPORTS_BUCKET,
    INGEST_ADVISORIES_CONSUMER,
    INGEST_ADVISORIES_STREAM,
    INGEST_DEAD_PREFIX,
    INGEST_DEAD_STREAM,
    INGEST_RESULT_PREFIX,
    INGEST_RESULT_SOURCES,
    INGEST_RESULTS_STREAM,
    INGEST_STAGES,
    INGEST_WORK_PREFIX,
    MAX_DELIVERIES_ADVISORY,
    ROUTED_STAGES,
    ingest_stream,
)
from candor_kit.tasks import keep_running

log = structlog.get_logger("candor.ingest")
W = TypeVar("W", ingest_pb2.DetectWork, ingest_pb2.EmbedWork, ingest_pb2.MatchWork)

IMPORT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
#: The work stream's byte limit: a full stream refuses new photos (the gateway answers
#: RESOURCE_EXHAUSTED) long before a disk fills.
WORK_STREAM_BYTES = 1 << 30
#: How long the results of an import are kept.
RESULTS_MAX_AGE_S = 90 * 24 * 3600.0


@dataclass(frozen=True)
class Stage:
    """One step of the import pipeline: its work subject and the durable consumer its workers
    share. Detection and embedding depend on the model, so their work is routed by model id (the
    ``lane``): a detector or embedder pulls only its own model's photos."""

    name: str
    lane: str = ""

    def __post_init__(self) -> None:
        if self.name in ROUTED_STAGES and not self.lane:
            raise ValueError(f"the {self.name} stage is routed by model: name the model")
        if self.lane:
            subjects.lane(self.lane)

    @classmethod
    def from_consumer(cls, consumer: str) -> Stage:
        """The stage a durable consumer name belongs to (``ingest-match``, ``ingest-detect-<lane>``)."""
        name, _, lane = consumer.removeprefix("ingest-").partition("-")
        return cls(name, lane)

    def of(self, model_id: str) -> Stage:
        """This stage for one model's lane."""
        return Stage(self.name, model_id)

    @property
    def subject(self) -> str:
        """The work-queue subject of this stage."""
        return f"{INGEST_WORK_PREFIX}.{self.name}" + (f".{self.lane}" if self.lane else "")

    @property
    def consumer(self) -> str:
        """The durable consumer every replica of this stage's worker pulls from."""
        return f"ingest-{self.name}" + (f"-{self.lane}" if self.lane else "")


MATCH = Stage("match")


@dataclass(frozen=True)
class WorkerSettings:
    """How an import worker pulls and retries (catalogue.IMPORT_SETTINGS)."""

    enabled: bool = True
    batch: int = 4
    ack_wait_s: float = 60.0
    max_deliver: int = 5
    stream_replicas: int = 1

    @classmethod
    def read(cls, env: EnvReader) -> WorkerSettings:
        """Read the import worker settings."""
        return cls(
            enabled=env.get(catalogue.IMPORT_WORKER) == "on",
            batch=env.get(catalogue.IMPORT_BATCH),
            ack_wait_s=env.get(catalogue.IMPORT_ACK_WAIT_S),
            max_deliver=env.get(catalogue.IMPORT_MAX_DELIVER),
            stream_replicas=env.get(catalogue.INGEST_STREAM_REPLICAS),
        )


#: How many times the work item being handled was delivered (1: the first time); set by the
#: worker for each item's handling.
_DELIVERY: contextvars.ContextVar[int] = contextvars.ContextVar("candor_ingest_delivery", default=1)


def delivery_count() -> int:
    """How many times the work item the calling stage is handling was delivered: above 1, an
    earlier delivery may have done part of its work (a worker died, or its acknowledgement was
    lost) and the stage must not do that part twice."""
    return _DELIVERY.get()


#: What only the matcher can say of a photo; the gateway and every stage may reject it or give up.
MATCHER_OUTCOMES = frozenset({ingest_pb2.OUTCOME_ENROLLED, ingest_pb2.OUTCOME_DUPLICATE})
#: The source of a result stored before each party had a subject of its own (one subject a photo,
#: ``<prefix>.<import id>.<item>``): read as the gateway's, the first in line.
EARLIER_SOURCE = ""


def result_subject(import_id: str, item: int, source: str) -> str:
    """Where ``source`` (one of INGEST_RESULT_SOURCES, or EARLIER_SOURCE) keeps one photo's result."""
    return f"{INGEST_RESULT_PREFIX}.{import_id}.{item}" + (f".{source}" if source else "")


def result_source(subject: str) -> str | None:
    """Who stored the result on ``subject``: a name of INGEST_RESULT_SOURCES, EARLIER_SOURCE, or
    None for a subject no party stores results on."""
    tokens = subject.removeprefix(f"{INGEST_RESULT_PREFIX}.").split(".")
    if len(tokens) == 2:
        return EARLIER_SOURCE
    return tokens[2] if len(tokens) == 3 and tokens[2] in INGEST_RESULT_SOURCES else None


def _rank(source: str | None) -> int:
    """How far along the line ``source`` is: 0 for no result, 1 for the gateway (and a result from
    before sources), up to len(INGEST_RESULT_SOURCES) for the matcher."""
    return 0 if source is None else INGEST_RESULT_SOURCES.index(source or "gateway") + 1


def may_give(source: str, outcome: int) -> bool:
    """Whether ``source`` may give a photo ``outcome``: only the matcher enrols or finds a duplicate."""
    return outcome not in MATCHER_OUTCOMES or source == "match"


def result_stands(source: str, outcome: int, held: str | None) -> bool:
    """Whether a result ``source`` stored with ``outcome`` replaces the one held from ``held`` (None:
    none yet): one its source may give, from as far along the line or further (from as far along,
    the later replaces the earlier: a photo resumed after a failure)."""
    return may_give(source, outcome) and _rank(source) >= _rank(held)


def check_import_id(import_id: str) -> str:
    """An import id is 8 to 64 of [A-Za-z0-9_-]: it becomes part of NATS subjects."""
    if not IMPORT_ID.match(import_id):
        raise InvalidInput("import_id must be 8 to 64 of A-Z, a-z, 0-9, _ and -")
    return import_id


async def ensure_ingest_streams(bus: Bus, replicas: int = 1) -> None:
    """Create each stage's work-queue stream, the results and the dead-letter streams when missing
    (every party calls this)."""
    for stage in INGEST_STAGES:
        work = f"{INGEST_WORK_PREFIX}.{stage}" + (".*" if stage in ROUTED_STAGES else "")
        await ensure_stream(
            bus.jetstream,
            StreamConfig(
                name=ingest_stream(stage),
                subjects=[work],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                discard=DiscardPolicy.NEW,
                # Photos travel as detect work; the later stages carry a chip or a vector.
                max_bytes=WORK_STREAM_BYTES if stage == "detect" else WORK_STREAM_BYTES // 4,
                duplicate_window=3600.0,
                num_replicas=replicas,
            ),
        )
    await ensure_stream(
        bus.jetstream,
        StreamConfig(
            name=INGEST_RESULTS_STREAM,
            subjects=[f"{INGEST_RESULT_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_msgs_per_subject=1,
            max_age=RESULTS_MAX_AGE_S,
            duplicate_window=600.0,
            num_replicas=replicas,
        ),
    )
    await ensure_stream(
        bus.jetstream,
        StreamConfig(
            name=INGEST_DEAD_STREAM,
            subjects=[f"{INGEST_DEAD_PREFIX}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=RESULTS_MAX_AGE_S,
            num_replicas=replicas,
        ),
    )


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def rejection(
    item: ingest_pb2.ItemRef, reason: ingest_pb2.RejectReason.ValueType, detail: str, stage: str
) -> ingest_pb2.ItemResult:
    """The result of a photo refused by a rule."""
    return ingest_pb2.ItemResult(
        item=item, outcome=ingest_pb2.OUTCOME_REJECTED, reason=reason, detail=detail[:300], stage=stage
    )


async def publish_result(bus: Bus, result: ingest_pb2.ItemResult, source: str) -> None:
    """Store a photo's result from ``source`` (the gateway or a stage: the one this service's NATS
    user may publish as), durably; a repeat within the duplicate window is stored once.

    The message id is keyed with this service's login (``Bus.message_key``), so no other service
    can take it first and have this result dropped as a duplicate."""
    if not result.HasField("finished_at"):
        result.finished_at.CopyFrom(_now())
    subject = result_subject(result.item.import_id, result.item.item, source)
    outcome = ingest_pb2.Outcome.Name(result.outcome)
    await bus.publish_durable(subject, result, msg_id=keyed_message_id(bus.message_key, subject, outcome))


async def hand_on(bus: Bus, stage: Stage, work: W) -> None:
    """Queue a photo for the next stage; a repeat within the duplicate window is stored once."""
    await bus.publish_durable(stage.subject, work, msg_id=f"{work.item.import_id}.{work.item.item}.{stage.name}")


class Worker(Generic[W]):
    """Pulls one stage's work and settles every message: ack, retry later, or dead-letter."""

    def __init__(
        self,
        bus: Bus,
        stage: Stage,
        handle: Callable[[W], Awaitable[None]],
        settings: WorkerSettings,
        audit: AuditPublisher,
    ) -> None:
        self._bus = bus
        self._stage = stage
        self._work_type = WORK_TYPES[stage.name]
        self._handle = handle
        self._settings = settings
        self._audit = audit

    def _consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self._stage.consumer,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self._settings.ack_wait_s,
            max_deliver=self._settings.max_deliver,
            max_ack_pending=1000,
            filter_subject=self._stage.subject,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; a failure to set up (NATS unreachable, say) is logged and retried."""
        await keep_running("import_worker_failed", self._work, stop, logger=log, stage=self._stage.name)

    async def _work(self, stop: asyncio.Event) -> None:
        """Pull ``batch`` messages at a time until ``stop`` is set, settling each on its own."""
        await ensure_ingest_streams(self._bus, self._settings.stream_replicas)
        subscription = await self._bus.pull_subscribe(
            self._stage.subject,
            durable=self._stage.consumer,
            stream=ingest_stream(self._stage.name),
            config=self._consumer_config(),
        )
        log.info("import_worker_started", stage=self._stage.name, batch=self._settings.batch)
        # Up to `batch` items are worked on at once, and a free place is filled as soon as an item
        # is settled: a slow item does not hold back the others' successors (and the matcher's
        # group commit finds items waiting while it writes).
        working: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                free = self._settings.batch - len(working)
                if not free:
                    await asyncio.wait(working, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    messages = await fetch_batch(subscription, free, timeout=1, consumer=self._stage.consumer)
                except Exception as exc:  # noqa: BLE001 - the connection is reconnecting; try again shortly
                    log.warning("import_fetch_failed", stage=self._stage.name, error=str(exc))
                    await asyncio.sleep(0.5)
                    continue
                for msg in messages:
                    task = asyncio.create_task(self._settle(msg))
                    working.add(task)
                    task.add_done_callback(working.discard)
        finally:
            # Stopping (or failing to fetch for good): the items under way are settled first.
            await asyncio.gather(*working, return_exceptions=True)

    async def _keep_alive(self, msg: Msg) -> None:
        """Tell JetStream the item is still being worked on, so a slow one is not redelivered."""
        while True:
            await asyncio.sleep(self._settings.ack_wait_s / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _settle(self, msg: Msg) -> None:
        delivered = msg.metadata.num_delivered if msg.metadata else 1
        work = self._work_type()
        try:
            work.ParseFromString(msg.data)
        except DecodeError:
            await self._dead_letter(msg, None, "the work item cannot be decoded")
            return
        if not IMPORT_ID.match(work.item.import_id) or work.item.item < 0:
            # Nothing to retry and no import to tell: an empty or made-up message goes at once.
            await self._dead_letter(msg, None, "the work item names no import")
            return
        alive = asyncio.create_task(self._keep_alive(msg))
        # Each item is settled in a task of its own, so the count is this item's alone.
        _DELIVERY.set(delivered)
        try:
            await self._handle(work)
        except Exception as exc:  # noqa: BLE001 - an item's failure is retried or dead-lettered, never lost
            if delivered >= self._settings.max_deliver:
                await self._dead_letter(msg, work.item, str(exc) or type(exc).__name__)
                return
            delay = min(60.0, 2.0 ** (delivered - 1))
            log.warning("import_item_retry", stage=self._stage.name, delivered=delivered, delay_s=delay, error=str(exc))
            await msg.nak(delay=delay)
            return
        finally:
            alive.cancel()
        await msg.ack()

    async def _dead_letter(self, msg: Msg, item: ingest_pb2.ItemRef | None, why: str) -> None:
        sequence = msg.metadata.sequence.stream if msg.metadata else 0
        await dead_letter(self._bus, self._audit, self._stage, msg.data, sequence, item, why, self._stage.name)
        await msg.term()


async def dead_letter(
    bus: Bus,
    audit: AuditPublisher,
    stage: Stage,
    data: bytes,
    sequence: int,
    item: ingest_pb2.ItemRef | None,
    why: str,
    source: str,
) -> None:
    """Copy a work item that keeps failing to the dead-letter stream, record the photo as FAILED
    (a result from ``source``, the party giving up on it), and audit it.

    A repeat from the same service is stored once. The copy's message id is keyed with this
    service's login, as a result's is: the work streams' sequences are plain to see, and with the
    bare ``dead.<stage>.<sequence>`` another stage's user could take the id first and have the copy
    dropped. So a worker and the gateway giving up on one message (a race: the worker on its last
    try, the gateway on JetStream's advisory) each keep a copy, with the same Candor-Original-Subject
    and Candor-Original-Sequence; the chain still records the failure once, under its event id, which
    names the stage (``subjects.STAGE_SCOPED_KINDS``)."""
    headers = {
        "Candor-Original-Subject": stage.subject,
        "Candor-Original-Sequence": str(sequence),
        MESSAGE_HEADER: why[:500],
        "Nats-Msg-Id": keyed_message_id(bus.message_key, "dead", stage.name, str(sequence)),
    }
    await bus.jetstream.publish(f"{INGEST_DEAD_PREFIX}.{stage.name}", data, headers=headers)
    details: dict[str, object] = {"stage": stage.name, "stream_sequence": sequence, "error": why[:300]}
    actor = f"service:{stage.name}"
    if item is not None:
        details |= {"import_id": item.import_id, "item": item.item, "subject_id": item.subject_id}
        actor = item.submitted_by or actor
        failed = ingest_pb2.ItemResult(item=item, outcome=ingest_pb2.OUTCOME_FAILED, detail=why[:300], stage=stage.name)
        await publish_result(bus, failed, source)
    await audit.publish(
        "gallery.import_item_failed",
        actor=actor,
        details=details,
        event_id=(
            subjects.stage_event_id(stage.name, item.import_id, item.item, "failed")
            if item
            else subjects.stage_event_id(stage.name, "dead", sequence)
        ),
    )
    log.error("import_item_dead_lettered", stage=stage.name, stream_sequence=sequence, error=why[:300])


#: Each stage's work message.
WORK_TYPES: dict[str, type[ingest_pb2.DetectWork | ingest_pb2.EmbedWork | ingest_pb2.MatchWork]] = {
    "detect": ingest_pb2.DetectWork,
    "embed": ingest_pb2.EmbedWork,
    "match": ingest_pb2.MatchWork,
}
#: How long the gateway waits before trying a kept announcement again after a failure to settle
#: its item (NATS reconnecting, say).
ADVISORY_RETRY_S = 5.0


async def ensure_advisories_stream(bus: Bus, replicas: int = 1) -> None:
    """Keep JetStream's announcements of import work whose deliveries ran out (the server sends
    each once, to whoever listens then) until a gateway has settled its item."""
    await ensure_stream(
        bus.jetstream,
        StreamConfig(
            name=INGEST_ADVISORIES_STREAM,
            subjects=_advisory_subjects(),
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_age=RESULTS_MAX_AGE_S,
            num_replicas=replicas,
        ),
    )


def _advisory_subjects() -> list[str]:
    return [f"{MAX_DELIVERIES_ADVISORY}.{ingest_stream(stage)}.*" for stage in INGEST_STAGES]


class UnreadableAnnouncement(ValueError):
    """A kept announcement that names no import work: it can never be settled."""


async def settle_exhausted(bus: Bus, audit: AuditPublisher, announcement: bytes) -> None:
    """Dead-letter the work item a MAX_DELIVERIES announcement names (a worker crashed on it every
    time), recording it FAILED so that its import still finishes, and take it out of its queue,
    where JetStream would otherwise leave it for ever. Nothing when it was settled meanwhile; a
    repeat does nothing twice (the dead letter, the result and the audit event are keyed).
    UnreadableAnnouncement for an announcement that names no import work."""
    try:
        event = json.loads(announcement)
        stage = Stage.from_consumer(str(event["consumer"]))
        sequence = int(event["stream_seq"])
        stream = ingest_stream(stage.name)
    except (KeyError, TypeError, ValueError) as exc:
        raise UnreadableAnnouncement(f"not an announcement of import work: {exc}") from exc
    try:
        stored = await bus.jetstream.get_msg(stream, sequence)
    except NotFoundError:  # settled meanwhile
        return
    work = WORK_TYPES[stage.name]()
    try:
        work.ParseFromString(stored.data or b"")
        item = work.item
    except DecodeError:  # dead-lettered all the same, with no item to record
        item = None
    why = f"no worker settled it in {event.get('deliveries', '?')} deliveries"
    await dead_letter(bus, audit, stage, stored.data or b"", sequence, item, why, "gateway")
    try:
        await bus.jetstream.delete_msg(stream, sequence)
    except APIError as exc:
        # A worker settled it meanwhile (each keeps its dead letter, see ``dead_letter``): the
        # server answers that as a failed delete, "no message found", not as not found.
        if not isinstance(exc, NotFoundError) and "no message found" not in (exc.description or ""):
            raise


async def dead_letter_exhausted(bus: Bus, audit: AuditPublisher, replicas: int, stop: asyncio.Event) -> None:
    """Settle, until ``stop`` is set, each import work item whose deliveries ran out, from the kept
    announcements (``settle_exhausted``); the gateways share one durable consumer, so each is
    settled by one of them, and one down when it was announced settles it when it is back."""
    await keep_running(
        "import_advisories_failed", lambda until: _settle_announced(bus, audit, replicas, until), stop, logger=log
    )


async def _settle_announced(bus: Bus, audit: AuditPublisher, replicas: int, stop: asyncio.Event) -> None:
    await ensure_advisories_stream(bus, replicas)
    subscription = await bus.pull_subscribe(
        _advisory_subjects()[0],
        durable=INGEST_ADVISORIES_CONSUMER,
        stream=INGEST_ADVISORIES_STREAM,
        config=ConsumerConfig(
            name=INGEST_ADVISORIES_CONSUMER,
            durable_name=INGEST_ADVISORIES_CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=60.0,
            max_deliver=-1,  # tried until settled: a lost one is an import that never ends
            filter_subjects=_advisory_subjects(),
        ),
    )
    while not stop.is_set():
        for msg in await fetch_batch(subscription, 10, timeout=1, consumer=INGEST_ADVISORIES_CONSUMER):
            try:
                await settle_exhausted(bus, audit, msg.data)
            except UnreadableAnnouncement as exc:  # never settles: kept only in the log and the count
                log.error("import_advisory_unreadable", error=str(exc))
                IMPORT_ADVISORIES_UNSETTLED.labels("unreadable").inc()
            except Exception as exc:  # noqa: BLE001 - tried again; one must not stop the others
                log.warning("import_advisory_failed", error=str(exc) or type(exc).__name__)
                IMPORT_ADVISORIES_UNSETTLED.labels("failed").inc()
                await msg.nak(delay=ADVISORY_RETRY_S)
                continue
            await msg.ack()


def item_digest(item: ingest_pb2.ItemRef, image_sha256: str) -> str:
    """What the gateway registers for a queued item: SHA-256 over the item as queued and its
    photo's SHA-256, so a stage that changes the item, or makes one up, is found out."""
    body = item.SerializeToString(deterministic=True)
    return hashlib.sha256(body + b"\n" + image_sha256.encode("ascii", "replace")).hexdigest()


def item_key(item: ingest_pb2.ItemRef) -> str:
    """An item's key in the register of queued items."""
    return f"{item.import_id}.{item.item}"


#: The marks an item's entry in the register gets after its digest: the matcher claimed it (it
#: enrols it, or rejects it itself), or the gateway took it back (an earlier stage's result ended
#: it, and the photo the gateway stored for it went).
CLAIMED = b":claimed"
TAKEN_BACK = b":taken-back"
#: Compare-and-set tries on one entry before giving up (another party wrote it between our read
#: and our write: each retry reads what it wrote).
_SET_TRIES = 5


class ItemRegister:
    """The gateway's register of the import items it queued (IMPORT_ITEMS_BUCKET): the gateway
    writes it, and the matcher enrols an item only when it finds it there unchanged.

    The matcher's claim of an item (``claim``) and the gateway's taking it back (``take_back``)
    are compare-and-set writes of its one entry, so exactly one of them wins: an earlier stage that
    rejects a photo and still hands it on (a compromised detector) cannot have it enrolled after
    its stored photo went."""

    def __init__(self, bus: Bus, replicas: int = 1) -> None:
        self._bus = bus
        self._replicas = replicas
        self._bucket: KeyValue | None = None

    async def _open(self, create: bool) -> KeyValue:
        if self._bucket is None:
            if create:
                self._bucket = await open_bucket(self._bus, IMPORT_ITEMS_BUCKET, self._replicas, ttl=RESULTS_MAX_AGE_S)
            else:
                self._bucket = await self._bus.jetstream.key_value(IMPORT_ITEMS_BUCKET)
        return self._bucket

    async def ensure(self) -> None:
        """Create the register when missing (the gateway, at start)."""
        await self._open(create=True)

    async def register(self, item: ingest_pb2.ItemRef, image_sha256: str) -> None:
        """Record an item the gateway queues (before it is queued)."""
        bucket = await self._open(create=True)
        await bucket.put(item_key(item), item_digest(item, image_sha256).encode("ascii"))

    async def claim(self, item: ingest_pb2.ItemRef, image_sha256: str) -> tuple[str, bool]:
        """Claim an item for the match stage. Returns why it must not be enrolled ("" when the
        gateway queued it as it is and has not taken it back; the claim then holds, and a repeat
        finds it), and whether the gateway queued an item of that number (whose import waits for
        its result)."""
        if not IMPORT_ID.match(item.import_id) or item.item < 0:
            return "the item names no import the gateway opened", False
        digest = item_digest(item, image_sha256).encode("ascii")

        def claimed(value: bytes | None) -> tuple[bytes | None, tuple[str, bool]]:
            if value is None:
                return None, ("the item was not queued by the gateway", False)
            if value == digest + CLAIMED:
                return None, ("", True)
            if value == digest + TAKEN_BACK:
                taken = "the photo was taken back: an earlier stage's result ended it before the matcher took it"
                return None, (taken, True)
            if value != digest:
                return None, ("the item differs from the one queued by the gateway", True)
            return digest + CLAIMED, ("", True)

        try:
            bucket = await self._open(create=False)
        except NotFoundError:
            return "the item was not queued by the gateway", False
        answer, _ = await change_entry(
            bucket, item_key(item), claimed, tries=_SET_TRIES,
            contended="the import item's register entry kept changing; the item is tried again",
        )  # fmt: skip
        return answer

    async def take_back(self, item: ingest_pb2.ItemRef, by_matcher: bool) -> bool:
        """Mark an item taken back before the photo stored for it goes; whether it may go. One the
        matcher claimed goes only on the matcher's own result (its rejection or failure), never on
        an earlier stage's: the matcher may have enrolled it."""

        def taken_back(value: bytes | None) -> tuple[bytes | None, bool]:
            if value is None:  # never queued (the gateway refused it), or long expired
                return None, True
            if value.endswith(CLAIMED):
                return None, by_matcher
            if value.endswith(TAKEN_BACK):
                return None, True
            return value + TAKEN_BACK, True

        bucket = await self._open(create=True)
        try:
            may_go, _ = await change_entry(
                bucket, item_key(item), taken_back, tries=_SET_TRIES, contended="the item kept changing"
            )
        except KeptChanging:
            return False  # kept: a photo left stored is safer than a record without its photo
        return may_go


def running_worker(
    bus: Bus,
    stage: Stage,
    handle: Callable[[W], Awaitable[None]],
    settings: WorkerSettings,
    stop: asyncio.Event,
) -> asyncio.Task[None] | None:
    """Start a stage's worker beside a service's request/reply serving, unless turned off."""
    if not settings.enabled:
        return None
    service = next(name for name, role in subjects.ROLES.items() if role.import_stage == stage.name)
    worker: Worker[W] = Worker(bus, stage, handle, settings, AuditPublisher(bus, service))
    return asyncio.create_task(worker.run(stop), name=f"import-{stage.name}")


__all__ = [
    "EARLIER_SOURCE",
    "IMPORTS_BUCKET",
    "IMPORT_ID",
    "MATCH",
    "MATCHER_OUTCOMES",
    "ItemRegister",
    "Stage",
    "UnreadableAnnouncement",
    "Worker",
    "WorkerSettings",
    "check_import_id",
    "dead_letter_exhausted",
    "delivery_count",
    "ensure_advisories_stream",
    "ensure_ingest_streams",
    "hand_on",
    "may_give",
    "publish_result",
    "rejection",
    "result_source",
    "result_stands",
    "result_subject",
    "running_worker",
    "settle_exhausted",
]

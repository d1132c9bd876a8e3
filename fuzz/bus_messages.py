"""Fuzz the messages that travel on JetStream with atheris: audit events, checkpoints, import work.

Each input picks a target and is handed to the code that receives such a message:

- an audit event, on the subject of the service that owns its kind or of one that does not (a
  forgery): the audit service's own ``append_messages`` into a real chain (SQLite in memory,
  signed with a key made for the run), with its size bound, publisher check and refusal folding;
- a checkpoint message: the check that decides whether the audit service trusts it;
- detect, embed and match work: the checks a stage makes before it works an item (the item names
  an import, a new subject id, bounded metadata), the digest the matcher compares with the
  gateway's register, and the rejection a refused item ends with;
- an import photo's result, on the subject of each party that may store one: the gateway's tally,
  which takes it or refuses it, and the answer it gives for the photo from what is stored.

A message may be refused (DecodeError, or a CandorError, which the services turn into a dead
letter or a refusal record); any other exception is a finding.

    .venv/bin/python fuzz/bus_messages.py -atheris_runs=N [-max_total_time=S]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import atheris
import structlog
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

SMOKE = os.environ.get("CANDOR_FUZZ_SMOKE") == "1"
CANDOR = ["candor", "candor_audit", "candor_gateway", "candor_kit"]
with atheris.instrument_imports(include=CANDOR) if SMOKE else contextlib.nullcontext():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from candor.audit.v1 import audit_pb2
    from candor.ingest.v1 import ingest_pb2
    from candor_audit.chain import AuditChain
    from candor_audit.outside import CheckpointStream, genuine_event_id
    from candor_audit.service import AuditLog
    from candor_gateway.imports import TALLY_SOURCES, Tally
    from candor_kit import subjects
    from candor_kit.audit_signing import Signer, checkpoint_message
    from candor_kit.errors import CandorError
    from candor_kit.identifiers import check_metadata, check_new_subject_id
    from candor_kit.ingest import IMPORT_ID, item_digest, rejection, result_subject

SIGNER = Signer(Ed25519PrivateKey.generate())
CHECKPOINTS = CheckpointStream(None, {SIGNER.key_id: SIGNER.public_key})  # type: ignore[arg-type]
LOOP = asyncio.new_event_loop()
#: What NATS lets a subject token be (a published subject holds no space nor wildcard).
TOKEN = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
#: A fresh chain every so many appends, so a long campaign does not grow one without end.
CHAIN_APPENDS = 5000


class Chain:
    """The audit log the harness appends to: a real chain, in memory."""

    log = AuditLog(AuditChain(Path(":memory:"), SIGNER), SIGNER)
    appends = 0

    @classmethod
    def current(cls) -> AuditLog:
        cls.appends += 1
        if cls.appends % CHAIN_APPENDS == 0:
            cls.log = AuditLog(AuditChain(Path(":memory:"), SIGNER), SIGNER)
        return cls.log


def _audit_event(source: str) -> Callable[[bytes], None]:
    def append(data: bytes) -> None:
        event = audit_pb2.AuditEvent.FromString(data)  # the service parses first
        subject = subjects.audit_subject(source, event.kind if TOKEN.match(event.kind) else "none")
        genuine_event_id(subject, data)
        log = Chain.current()
        message = SimpleNamespace(subject=subject, data=data, metadata=None)
        (outcome,) = LOOP.run_until_complete(log.append_messages([message]))  # type: ignore[list-item]
        if outcome is not None:
            raise outcome
        LOOP.run_until_complete(log.flush_refusals())

    return append


def _checkpoint(data: bytes) -> None:
    CHECKPOINTS._validated(data)


def _work(
    message_type: type[ingest_pb2.DetectWork | ingest_pb2.EmbedWork | ingest_pb2.MatchWork],
) -> Callable[[bytes], None]:
    def check(data: bytes) -> None:
        work = message_type.FromString(data)
        item = work.item
        if not IMPORT_ID.match(item.import_id) or item.item < 0:
            return  # dead-lettered at once by the worker
        result_subject(item.import_id, item.item, "match")
        item_digest(item, getattr(work, "image_sha256", ""))
        try:
            check_new_subject_id(item.subject_id)
            check_metadata(item.metadata)
        except CandorError as refused:
            rejection(item, ingest_pb2.REJECT_REASON_INVALID, refused.message, "matcher").SerializeToString()

    return check


def _result(data: bytes) -> None:
    """The gateway reading a stored result on the subject of each party, in a tally of 8 photos;
    the answer for each photo that has a result then."""
    tally = Tally(8)
    named = ingest_pb2.ItemResult.FromString(data).item
    for source in TALLY_SOURCES:
        tally.take(result_subject(named.import_id, named.item, source), data)
    for item in map(int, tally.outcomes.nonzero()[0]):
        tally.settle(ingest_pb2.ItemResult(), named.import_id, item, data)


#: Each kind of bus message and what receives it.
TARGETS: list[tuple[str, Callable[[bytes], None]]] = [
    ("audit event from its owner", _audit_event("gateway")),
    ("audit event forged by another service", _audit_event("detector")),
    ("checkpoint", _checkpoint),
    ("detect work", _work(ingest_pb2.DetectWork)),
    ("embed work", _work(ingest_pb2.EmbedWork)),
    ("match work", _work(ingest_pb2.MatchWork)),
    ("import result", _result),
]


def seed_inputs() -> list[bytes]:
    """One well-formed message per target, followed by the target's index (read from the end)."""
    stamp = Timestamp(seconds=1_764_547_200)
    event = audit_pb2.AuditEvent(
        event_id=str(uuid.UUID(int=3)), kind="search.completed", occurred_at=stamp, actor="alice",
        case_number="CASE-1/2026", purpose="investigation", details_json='{"candidates": []}',
    )  # fmt: skip
    head = "ab" * 32
    made_at = "2026-12-01T00:00:00.000000Z"
    checkpoint = audit_pb2.Checkpoint(
        sequence=7, head_hash=head, made_at=made_at, key_id=SIGNER.key_id,
        signature=SIGNER.sign(checkpoint_message(7, head, made_at)),
    )  # fmt: skip
    item = ingest_pb2.ItemRef(
        import_id="import-0001", item=3, subject_id="S-0001/2026", metadata={"source": "booking"},
        submitted_by="alice", import_started_at=stamp, model_id="dlib-resnet-v1",
    )  # fmt: skip
    messages = [
        event.SerializeToString(),
        event.SerializeToString(),
        checkpoint.SerializeToString(),
        ingest_pb2.DetectWork(item=item, image=b"\xff\xd8\xff").SerializeToString(),
        ingest_pb2.EmbedWork(item=item, image_sha256="0" * 64).SerializeToString(),
        ingest_pb2.MatchWork(item=item, image_sha256="0" * 64).SerializeToString(),
        ingest_pb2.ItemResult(
            item=item, outcome=ingest_pb2.OUTCOME_ENROLLED, image_sha256="0" * 64
        ).SerializeToString(),
    ]
    return [message + bytes([index]) for index, message in enumerate(messages)]


def one_input(data: bytes) -> None:
    """Hand one input to the receiver of the chosen kind of message."""
    provider = atheris.FuzzedDataProvider(data)
    _, receive = TARGETS[provider.ConsumeIntInRange(0, len(TARGETS) - 1)]
    try:
        receive(provider.ConsumeBytes(provider.remaining_bytes()))
    except (DecodeError, CandorError):
        pass


def main() -> None:
    """Run the fuzzer with libFuzzer's command line."""
    # The services log every refusal; a campaign makes millions. (Here, not at import: the tests
    # import this module into their own process.)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    if not SMOKE:
        atheris.instrument_all()
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

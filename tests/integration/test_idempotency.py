"""Client request ids through the running services: a retried Search, Enroll or DeleteSubject gets the
first call's answer, makes no second search, record or audit entry, and racing retries, a refusal
and a restart of the gateway keep it so."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import jwt
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from nats.js.errors import KeyNotFoundError

from candor.common.v1 import common_pb2
from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor.ingest.v1 import ingest_pb2
from candor.matcher.v1 import matcher_pb2
from candor_gateway.idempotency import STALE_AFTER_S, _Entry
from candor_gateway.photos import PhotoStore
from candor_gateway.quota import _count_key
from candor_kit import AuditPublisher, Bus, ServiceUnavailable
from candor_kit.subjects import (
    IMPORTS_BUCKET,
    INGEST_RESULTS_STREAM,
    MATCH_DELETE_SUBJECT,
    REQUESTS_BUCKET,
    SEARCH_COUNTS_BUCKET,
)
from tests.integration.conftest import InProcessStack, as_user
from tests.integration.cuts import audited, cut_short, deadlines, electing_a_leader, nothing_left_half_done
from tests.integration.test_governance import (
    fresh_investigator,
    policy_with,
    restore_policy,  # noqa: F401 - a fixture
)
from tests.integration.test_search_flow import audit_records
from tests.waiting import eventually

INVESTIGATOR = as_user("investigator-token")
ENROLLER = as_user("enroller-token")

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def settled_records(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, case: str, kinds: list[str]
) -> list[str]:
    """The event ids of the case's records of ``kinds``, once everything the gateway wrote before
    this call is in the chain (a marker search of its own case comes after them)."""
    marker = f"MARK-{uuid.uuid4().hex[:8]}"
    await gateway.Search(
        gateway_pb2.SearchRequest(
            probe_image=(samples / "obama2.jpg").read_bytes(), case_number=marker, purpose="investigation"
        ),
        metadata=INVESTIGATOR,
    )

    async def marked() -> bool:
        return bool(await audit_records(stack, case_number=marker, kinds=["search.completed"]))

    await eventually(marked)
    return [r.event.event_id for r in await audit_records(stack, case_number=case, kinds=kinds)]


def search_request(
    samples: Path, case: str, request_id: str, purpose: str = "investigation"
) -> gateway_pb2.SearchRequest:
    return gateway_pb2.SearchRequest(
        probe_image=(samples / "obama2.jpg").read_bytes(),
        case_number=case,
        purpose=purpose or "investigation",
        client_request_id=request_id,
    )


def user_of(metadata: tuple[tuple[str, str]]) -> str:
    """The user a call's bearer token names."""
    return jwt.decode(metadata[0][1].removeprefix("Bearer "), options={"verify_signature": False})["sub"]


@contextlib.asynccontextmanager
async def a_connection(stack: InProcessStack, name: str) -> AsyncIterator[Bus]:
    """A connection of the test's own to the stack's NATS, named ``name``, closed after."""
    bus = await Bus.connect(stack.nats_url, name)
    try:
        yield bus
    finally:
        await bus.close()


def a_dead_gateway(stack: InProcessStack) -> contextlib.AbstractAsyncContextManager[Bus]:
    """A connection as a gateway's, to write the state a gateway killed part way leaves."""
    return a_connection(stack, "dead-gateway")


async def leave_a_dead_gateways_claim(bus: Bus, user: str, request: Message, operation_id: str) -> None:
    """Write the claim a gateway killed part way through ``request`` leaves in the register: its
    operation id, renewed for the last time long enough ago that a retry takes it over."""
    key = hashlib.sha256(f"{user}\n{request.DESCRIPTOR.full_name}\n{request.client_request_id}".encode()).hexdigest()
    digest = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
    stale = _Entry(digest, time.time() - STALE_AFTER_S - 5, operation_id=operation_id)
    await (await bus.jetstream.key_value(REQUESTS_BUCKET)).create(key, stale.encode())


async def enrolled_subject(gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, prefix: str) -> tuple[str, str]:
    """A new subject with one face enrolled: its id and its record's."""
    subject = f"{prefix}-{uuid.uuid4().hex[:8]}"
    enrolled = await gateway.Enroll(
        gateway_pb2.EnrollRequest(image=(samples / "obama3.jpg").read_bytes(), subject_id=subject), metadata=ENROLLER
    )
    return subject, enrolled.record_id


async def expunge_in_the_matcher(bus: Bus, user: str, subject: str, operation_id: str) -> int:
    """Have the matcher expunge a subject as a gateway does under ``operation_id``; the records it deleted."""
    deleted = await bus.request(
        MATCH_DELETE_SUBJECT,
        matcher_pb2.DeleteSubjectRequest(
            subject_id=subject, origin=common_pb2.Origin(actor=user, request_id=operation_id)
        ),
        matcher_pb2.DeleteSubjectResponse,
        30,
    )
    return deleted.deleted_records


async def test_racing_retries_of_a_search_make_one_search_with_one_record(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path
) -> None:
    case, request_id = f"IDEM-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    asked = search_request(samples, case, request_id)
    answers = await asyncio.gather(*(gateway.Search(asked, metadata=INVESTIGATOR) for _ in range(4)))
    again = await gateway.Search(asked, metadata=INVESTIGATOR)
    assert len({answer.search_id for answer in [*answers, again]}) == 1
    assert all(answer.candidates == answers[0].candidates for answer in [*answers, again])
    completed = await settled_records(stack, gateway, samples, case, ["search.completed"])
    assert completed == [answers[0].search_id]
    assert len(await audit_records(stack, case_number=case, kinds=["matcher.searched"])) == 1


async def test_a_search_recorded_by_a_gateway_that_died_before_answering_is_answered_from_its_record(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path
) -> None:
    # A gateway claimed the id, ran the search, stored its record, and was killed before storing its
    # answer: its claim goes stale and the retry takes it over. The retry must neither record the
    # search a second time nor answer other candidates than the record holds.
    case, request_id = f"IDEM-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    asked = search_request(samples, case, request_id)
    user = user_of(INVESTIGATOR)
    dead_search_id = str(uuid.uuid4())
    recorded = [{"rank": 1, "subject_id": "recorded-only", "distance": 0.123456, "record_id": str(uuid.uuid4())}]
    async with a_dead_gateway(stack) as bus:
        await leave_a_dead_gateways_claim(bus, user, asked, dead_search_id)
        await AuditPublisher(bus, "gateway").publish(
            "search.completed",
            event_id=dead_search_id,
            actor=user,
            case_number=case,
            purpose="investigation",
            details={
                "candidates": recorded,
                "probe_sha256": hashlib.sha256(asked.probe_image).hexdigest(),
                # The model the dead gateway searched with: the gallery may have been switched
                # since, and the recorded distances are that model's.
                "model": {"id": "recorded-model", "version": "recorded-version", "metric": "cosine"},
                "threshold": 0.375,
                "calibration_id": "recorded-calibration",
            },
        )

    answer = await gateway.Search(asked, metadata=INVESTIGATOR)
    assert answer.search_id == dead_search_id
    assert [(c.rank, c.subject_id, round(c.distance, 6), c.record_id) for c in answer.candidates] == [
        (1, "recorded-only", 0.123456, recorded[0]["record_id"])
    ]
    # Answered with the model the record names, not the one this gateway searched with.
    assert (answer.model.id, answer.model.version, answer.model.metric) == (
        "recorded-model",
        "recorded-version",
        "cosine",
    )
    assert (round(answer.model.threshold, 6), answer.model.calibration_id) == (0.375, "recorded-calibration")
    assert {(c.model_id, c.model_version) for c in answer.candidates} == {("recorded-model", "recorded-version")}
    assert await settled_records(stack, gateway, samples, case, ["search.completed"]) == [dead_search_id]
    again = await gateway.Search(asked, metadata=INVESTIGATOR)
    assert again == answer


async def test_an_expunge_recorded_by_a_gateway_that_died_before_answering_is_answered_from_its_record(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, store: PhotoStore
) -> None:
    # A gateway claimed the id, had the matcher delete the subject's record, deleted its photo,
    # recorded subject.deleted under the claim's operation id, and was killed before storing its
    # answer. The retry takes the stale claim over: it must not record a second deletion (with
    # nothing left, it would say 0 records and 0 photos), and it answers what was deleted.
    subject, record_id = await enrolled_subject(gateway, samples, "idem-dead")
    request_id = uuid.uuid4().hex
    asked = gateway_pb2.DeleteSubjectRequest(subject_id=subject, reason="court order", client_request_id=request_id)
    user = user_of(ENROLLER)
    dead_operation = str(uuid.uuid4())
    async with a_dead_gateway(stack) as bus:
        await leave_a_dead_gateways_claim(bus, user, asked, dead_operation)
        assert await expunge_in_the_matcher(bus, user, subject, dead_operation) == 1
        assert await store.delete("gallery", record_id)
        await AuditPublisher(bus, "gateway").publish(
            "subject.deleted",
            event_id=dead_operation,
            actor=user,
            details={
                "subject_id": subject, "reason": "court order", "records": 1, "photos_deleted": 1,
                "photos_unreadable": 0, "photos_unreadable_names": [],
            },
        )  # fmt: skip

    answer = await gateway.DeleteSubject(asked, metadata=ENROLLER)
    assert (answer.deleted_records, answer.unreadable_photos) == (1, 0)
    await settled_records(stack, gateway, samples, "none", [])
    deleted = [r for r in await audit_records(stack, kinds=["subject.deleted"]) if subject in r.event.details_json]
    assert [r.event.event_id for r in deleted] == [dead_operation], f"the expunge is on the chain {len(deleted)} times"
    # The matcher's records of both runs name the expunge, so the chain pairs them with its record.
    matched = [
        json.loads(r.event.details_json)
        for r in await audit_records(stack, kinds=["matcher.subject_deleted"])
        if subject in r.event.details_json
    ]
    assert [(m["request_id"], m["records"]) for m in matched] == [(dead_operation, 1), (dead_operation, 0)]


async def test_an_expunge_whose_gateway_died_before_recording_it_is_recorded_with_what_it_deleted(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, store: PhotoStore
) -> None:
    # A gateway claimed the id, had the matcher delete the subject's record, and was killed before
    # it deleted the photo or recorded the expunge. The retry takes the claim over and finds no
    # record left: its record and answer must still say what the expunge deleted, not 0 records.
    subject, record_id = await enrolled_subject(gateway, samples, "idem-half")
    asked = gateway_pb2.DeleteSubjectRequest(
        subject_id=subject, reason="court order", client_request_id=uuid.uuid4().hex
    )
    user = user_of(ENROLLER)
    dead_operation = str(uuid.uuid4())
    async with a_dead_gateway(stack) as bus:
        await leave_a_dead_gateways_claim(bus, user, asked, dead_operation)
        assert await expunge_in_the_matcher(bus, user, subject, dead_operation) == 1

    answer = await gateway.DeleteSubject(asked, metadata=ENROLLER)
    assert (answer.deleted_records, answer.unreadable_photos) == (1, 0)
    assert await store.header("gallery", record_id) is None
    await settled_records(stack, gateway, samples, "none", [])
    deleted = [r for r in await audit_records(stack, kinds=["subject.deleted"]) if subject in r.event.details_json]
    assert [r.event.event_id for r in deleted] == [dead_operation]
    recorded = json.loads(deleted[0].event.details_json)
    assert (recorded["records"], recorded["photos_deleted"]) == (1, 1)


async def test_an_enrolment_recorded_by_a_gateway_that_died_before_answering_is_answered_from_its_record(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path
) -> None:
    # A gateway claimed the id, enrolled the face and recorded enroll.completed (created) under the
    # claim's operation id, and was killed before storing its answer. The retry takes the claim
    # over and finds the record made: it must not record the enrolment again (as "not created"),
    # and answers as the first call would have, created and all.
    subject = f"idem-enrol-{uuid.uuid4().hex[:8]}"
    asked = gateway_pb2.EnrollRequest(
        image=(samples / "obama3.jpg").read_bytes(), subject_id=subject, client_request_id=uuid.uuid4().hex
    )
    user = user_of(ENROLLER)
    dead_operation = str(uuid.uuid4())
    first = await gateway.Enroll(  # the dead gateway's enrolment, as any gateway makes it
        gateway_pb2.EnrollRequest(image=asked.image, subject_id=subject), metadata=ENROLLER
    )
    async with a_dead_gateway(stack) as bus:
        await leave_a_dead_gateways_claim(bus, user, asked, dead_operation)
        await AuditPublisher(bus, "gateway").publish(
            "enroll.completed",
            event_id=dead_operation,
            actor=user,
            details={"subject_id": subject, "record_id": first.record_id, "created": True, "photo_stored": True},
        )

    answer = await gateway.Enroll(asked, metadata=ENROLLER)
    assert (answer.record_id, answer.created) == (first.record_id, True)
    await settled_records(stack, gateway, samples, "none", [])
    completed = [r for r in await audit_records(stack, kinds=["enroll.completed"]) if subject in r.event.details_json]
    assert dead_operation in [r.event.event_id for r in completed]
    assert len(completed) == 2, f"{len(completed)} enroll.completed records for two enrolment requests"
    await gateway.DeleteSubject(gateway_pb2.DeleteSubjectRequest(subject_id=subject, reason="test"), metadata=ENROLLER)


def lose_the_ack_of(
    monkeypatch: pytest.MonkeyPatch, kind: str, recorded: Callable[[Message], bool], *, stored: bool = True
) -> list[str]:
    """Make the first publish of an event of ``kind`` that ``recorded`` picks fail as nats-py fails
    it when the stream is out of reach: stored and its ack lost (a leader change, a timeout), or,
    not ``stored``, never stored at all. Returns the event ids so failed (a fault injected round the
    real publish: a lost ack cannot be made to happen on one nats-server)."""
    publish = Bus.publish_durable
    lost: list[str] = []

    async def ack_lost(bus: Bus, subject: str, message: Message, *, msg_id: str) -> tuple[int, bool]:
        if subject.endswith(f".{kind}") and not lost and recorded(message):
            lost.append(message.event_id)  # type: ignore[attr-defined]
            if stored:
                await publish(bus, subject, message, msg_id=msg_id)
            raise ServiceUnavailable(f"could not store {subject} durably: nats: timeout")
        return await publish(bus, subject, message, msg_id=msg_id)

    monkeypatch.setattr(Bus, "publish_durable", ack_lost)
    return lost


async def test_a_search_whose_record_was_stored_but_not_acknowledged_is_recorded_once_when_retried(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    stack: InProcessStack,
    samples: Path,
    store: PhotoStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The gateway's search.completed was stored but its ack lost: the search answers UNAVAILABLE
    # (its outcome unknown to the gateway) and the client retries it under the same request id. The
    # retry must be recognised as the search recorded, not run and recorded as a second search.
    case, request_id = f"IDEM-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    asked = search_request(samples, case, request_id)
    lost = lose_the_ack_of(monkeypatch, "search.completed", lambda event: event.case_number == case)  # type: ignore[attr-defined]
    with pytest.raises(grpc.aio.AioRpcError) as first:
        await gateway.Search(asked, metadata=INVESTIGATOR)
    assert first.value.code() == grpc.StatusCode.UNAVAILABLE and len(lost) == 1
    again = await gateway.Search(asked, metadata=INVESTIGATOR)
    completed = await settled_records(stack, gateway, samples, case, ["search.completed"])
    assert len(completed) == 1, f"one search, retried once, is on the chain {len(completed)} times"
    assert completed == lost == [again.search_id]
    # The record says the probe was kept for its reviewers, and it is.
    (record,) = await audit_records(stack, case_number=case, kinds=["search.completed"])
    assert json.loads(record.event.details_json)["probe_retained"] is True
    assert await store.header("probe", again.search_id) is not None


@pytest.mark.parametrize(
    ("dead_gateway", "stored"),
    [(False, False), (False, True), (True, True)],
    ids=["claim-not-stored", "claim-stored-answer-lost", "take-over-stored-answer-lost"],
)
async def test_a_search_whose_request_register_is_electing_a_leader_is_answered_once(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    stack: InProcessStack,
    samples: Path,
    monkeypatch: pytest.MonkeyPatch,
    dead_gateway: bool,
    stored: bool,
) -> None:
    """A search with a client request id claims it in the request register first (or takes over a
    dead gateway's claim). While the register's stream elects a leader (a second or two when a
    NATS node of three dies), a write fails; the search must ride that out, not answer
    UNAVAILABLE, and a write that was stored though its answer was lost is the search's own claim,
    not another call's under way."""
    case, request_id = f"IDEM-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    asked = search_request(samples, case, request_id)
    if dead_gateway:
        async with a_dead_gateway(stack) as bus:
            await leave_a_dead_gateways_claim(bus, user_of(INVESTIGATOR), asked, str(uuid.uuid4()))
    failed = electing_a_leader(monkeypatch, REQUESTS_BUCKET, "update" if dead_gateway else "create", stored=stored)
    answer = await gateway.Search(asked, metadata=INVESTIGATOR)
    assert len(failed) == 1, "the register write was not failed"
    completed = await settled_records(stack, gateway, samples, case, ["search.completed"])
    assert completed == [answer.search_id]


async def shared_search_count(stack: InProcessStack, user: str) -> int:
    """``user``'s searches of today in the count every gateway replica shares (its quota's)."""
    async with a_connection(stack, "quota-check") as bus:
        bucket = await bus.jetstream.key_value(SEARCH_COUNTS_BUCKET)
        try:
            entry = await bucket.get(_count_key(user, dt.datetime.now(dt.UTC).date()))
        except KeyNotFoundError:
            return 0
        return int(entry.value or b"0")


async def test_a_search_whose_record_was_stored_but_not_acknowledged_counts_once_against_the_quota(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    stack: InProcessStack,
    samples: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_policy: None,  # noqa: F811 - the fixture
) -> None:
    # A user's searches of the day are counted in a count every gateway replica shares: a search on
    # the chain must be counted there once, though its first run failed (the ack of its record
    # lost) and gave its claim back, and its retry was answered from the record.
    await stack.use_policy(policy_with(quotas={"searches_per_user_per_day": 5}))
    user, metadata = fresh_investigator()
    case = f"IDEM-{uuid.uuid4().hex[:6]}"
    asked = search_request(samples, case, uuid.uuid4().hex)
    lost = lose_the_ack_of(monkeypatch, "search.completed", lambda event: event.case_number == case)  # type: ignore[attr-defined]
    with pytest.raises(grpc.aio.AioRpcError) as first:
        await gateway.Search(asked, metadata=metadata)
    assert first.value.code() == grpc.StatusCode.UNAVAILABLE and len(lost) == 1
    await gateway.Search(asked, metadata=metadata)

    async def on_the_chain() -> bool:
        records = await audit_records(stack, case_number=case, kinds=["search.completed"])
        return [r.event.event_id for r in records] == lost

    await eventually(on_the_chain, what="the search on the chain once")
    counted = await shared_search_count(stack, user)
    assert counted == 1, f"a search on the chain once is counted {counted} times in the quota every gateway shares"


async def test_a_search_without_an_id_whose_record_was_stored_but_not_acknowledged_keeps_its_probe(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    stack: InProcessStack,
    samples: Path,
    store: PhotoStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No id, so no retry redoes it: the search's record is on the chain, saying its probe was kept
    # for the reviewers its candidates go to. The gateway cannot tell it was stored, and must not
    # delete the probe as if the search never happened (the retention sweep deletes a probe whose
    # search is never recorded).
    case = f"IDEM-{uuid.uuid4().hex[:6]}"
    asked = search_request(samples, case, "")
    lost = lose_the_ack_of(monkeypatch, "search.completed", lambda event: event.case_number == case)  # type: ignore[attr-defined]
    with pytest.raises(grpc.aio.AioRpcError) as first:
        await gateway.Search(asked, metadata=INVESTIGATOR)
    assert first.value.code() == grpc.StatusCode.UNAVAILABLE and len(lost) == 1
    assert await settled_records(stack, gateway, samples, case, ["search.completed"]) == lost
    (record,) = await audit_records(stack, case_number=case, kinds=["search.completed"])
    assert json.loads(record.event.details_json)["probe_retained"] is True
    assert await store.header("probe", lost[0]) is not None, "a recorded search's probe was deleted"


async def test_a_search_without_an_id_whose_record_could_not_be_stored_deletes_its_probe(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    stack: InProcessStack,
    samples: Path,
    store: PhotoStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The other side: the record was never stored, so the search did not happen and its probe goes
    # at once (the gateway asks the chain), not weeks later when the retention sweep looks at it.
    case = f"IDEM-{uuid.uuid4().hex[:6]}"
    lost = lose_the_ack_of(monkeypatch, "search.completed", lambda e: e.case_number == case, stored=False)  # type: ignore[attr-defined]
    with pytest.raises(grpc.aio.AioRpcError) as first:
        await gateway.Search(search_request(samples, case, ""), metadata=INVESTIGATOR)
    assert first.value.code() == grpc.StatusCode.UNAVAILABLE and len(lost) == 1
    assert await settled_records(stack, gateway, samples, case, ["search.completed"]) == []
    assert await store.header("probe", lost[0]) is None, "an unrecorded search's probe was kept"


async def test_an_expunge_whose_record_was_stored_but_not_acknowledged_answers_what_it_deleted_when_retried(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same with an expunge: everything deleted, subject.deleted stored, its ack lost. Its retry
    # finds nothing left: it must answer what the first run deleted, and record no second deletion.
    subject, _ = await enrolled_subject(gateway, samples, "idem-ack")
    asked = gateway_pb2.DeleteSubjectRequest(
        subject_id=subject, reason="court order", client_request_id=uuid.uuid4().hex
    )
    lost = lose_the_ack_of(monkeypatch, "subject.deleted", lambda event: subject in event.details_json)  # type: ignore[attr-defined]
    with pytest.raises(grpc.aio.AioRpcError) as first:
        await gateway.DeleteSubject(asked, metadata=ENROLLER)
    assert first.value.code() == grpc.StatusCode.UNAVAILABLE and len(lost) == 1
    answer = await gateway.DeleteSubject(asked, metadata=ENROLLER)
    assert (answer.deleted_records, answer.unreadable_photos) == (1, 0)
    await settled_records(stack, gateway, samples, "none", [])
    deleted = [r for r in await audit_records(stack, kinds=["subject.deleted"]) if subject in r.event.details_json]
    assert [r.event.event_id for r in deleted] == lost, f"the expunge is on the chain {len(deleted)} times"


async def test_an_enrolment_whose_record_could_not_be_stored_answers_created_when_retried(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The matcher enrolled the face (a new record), then the gateway could not store its record
    # (the audit stream out of reach) and answered UNAVAILABLE. The retry finds the record made: it
    # must answer and record the enrolment as the one that created it, not "already enrolled".
    subject = f"idem-unstored-{uuid.uuid4().hex[:8]}"
    asked = gateway_pb2.EnrollRequest(
        image=(samples / "obama3.jpg").read_bytes(), subject_id=subject, client_request_id=uuid.uuid4().hex
    )
    lost = lose_the_ack_of(monkeypatch, "enroll.completed", lambda e: subject in e.details_json, stored=False)  # type: ignore[attr-defined]
    with pytest.raises(grpc.aio.AioRpcError) as first:
        await gateway.Enroll(asked, metadata=ENROLLER)
    assert first.value.code() == grpc.StatusCode.UNAVAILABLE and len(lost) == 1
    answer = await gateway.Enroll(asked, metadata=ENROLLER)
    assert answer.created, "the enrolment that made the record is answered as not having made it"
    await settled_records(stack, gateway, samples, "none", [])
    completed = [r for r in await audit_records(stack, kinds=["enroll.completed"]) if subject in r.event.details_json]
    assert [json.loads(r.event.details_json)["created"] for r in completed] == [True]
    await gateway.DeleteSubject(gateway_pb2.DeleteSubjectRequest(subject_id=subject, reason="test"), metadata=ENROLLER)


async def test_the_same_id_with_another_request_is_refused_and_does_nothing(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path
) -> None:
    case, request_id = f"IDEM-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    first = await gateway.Search(search_request(samples, case, request_id), metadata=INVESTIGATOR)
    other = search_request(samples, f"{case}-B", request_id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.Search(other, metadata=INVESTIGATOR)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "different request" in (refused.value.details() or "")
    assert await settled_records(stack, gateway, samples, case, ["search.completed"]) == [first.search_id]
    assert await settled_records(stack, gateway, samples, f"{case}-B", ["search.completed"]) == []


async def test_a_refused_search_retried_is_refused_again_with_one_record(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path
) -> None:
    case, request_id = f"IDEM-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    asked = search_request(samples, case, request_id, purpose="curiosity")
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway.Search(asked, metadata=INVESTIGATOR)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(await settled_records(stack, gateway, samples, case, ["search.refused"])) == 1


async def test_a_retried_enrolment_and_deletion_answer_as_the_first_and_are_recorded_once(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path
) -> None:
    subject = f"idem-{uuid.uuid4().hex[:8]}"
    enrol = gateway_pb2.EnrollRequest(
        image=(samples / "biden.jpg").read_bytes(), subject_id=subject, client_request_id=uuid.uuid4().hex
    )
    first, second = [await gateway.Enroll(enrol, metadata=ENROLLER) for _ in range(2)]
    assert first.created and second == first  # without an id the second would say created=False
    delete = gateway_pb2.DeleteSubjectRequest(subject_id=subject, reason="test", client_request_id=uuid.uuid4().hex)
    gone = await asyncio.gather(*(gateway.DeleteSubject(delete, metadata=ENROLLER) for _ in range(3)))
    assert [answer.deleted_records for answer in gone] == [1, 1, 1]

    async def recorded() -> bool:
        enrolled = await audit_records(stack, kinds=["matcher.enrolled", "enroll.completed"])
        deleted = await audit_records(stack, kinds=["subject.deleted"])
        return sum(subject in r.event.details_json for r in enrolled) >= 1 and any(
            subject in r.event.details_json for r in deleted
        )

    await eventually(recorded)
    await settled_records(stack, gateway, samples, "none", [])
    enrolled = [r for r in await audit_records(stack, kinds=["matcher.enrolled"]) if subject in r.event.details_json]
    deleted = [r for r in await audit_records(stack, kinds=["subject.deleted"]) if subject in r.event.details_json]
    assert (len(enrolled), len(deleted)) == (1, 1)


async def test_an_answer_outlives_a_restart_of_the_gateway(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path
) -> None:
    case, request_id = f"IDEM-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    first = await gateway.Search(search_request(samples, case, request_id), metadata=INVESTIGATOR)
    await stack.stop("gateway")
    await stack.start("gateway")
    again = await gateway.Search(search_request(samples, case, request_id), metadata=INVESTIGATOR)
    assert again.search_id == first.search_id
    assert await settled_records(stack, gateway, samples, case, ["search.completed"]) == [first.search_id]


async def test_an_import_is_idempotent_by_its_id_even_when_starts_race(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path
) -> None:
    import_id = f"idem-{uuid.uuid4().hex[:12]}"
    start = gateway_pb2.StartImportRequest(import_id=import_id, source="/srv/bookings/2026-12", total=3)
    started = await asyncio.gather(*(gateway.StartImport(start, metadata=ENROLLER) for _ in range(4)))
    assert {status.record.started_at.seconds for status in started} == {started[0].record.started_at.seconds}
    other = gateway_pb2.StartImportRequest(import_id=import_id, source="/srv/bookings/2026-11", total=3)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.StartImport(other, metadata=ENROLLER)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await settled_records(stack, gateway, samples, "none", [])
    records = await audit_records(stack, kinds=["gallery.import_started"])
    assert sum(import_id in r.event.details_json for r in records) == 1


async def import_records(stack: InProcessStack, import_ids: list[str]) -> dict[str, ingest_pb2.ImportRecord]:
    """The records in the bucket of imports of those of ``import_ids`` that have one."""
    async with a_connection(stack, "import-check") as bus:
        bucket = await bus.jetstream.key_value(IMPORTS_BUCKET)
        found = {}
        for import_id in import_ids:
            with contextlib.suppress(KeyNotFoundError):
                entry = await bucket.get(import_id)
                found[import_id] = ingest_pb2.ImportRecord.FromString(entry.value or b"")
        return found


async def test_an_import_started_runs_to_its_audit_record_when_its_caller_stops_waiting(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack
) -> None:
    """An importer's client gives up while the gateway is between recording a new import and its
    gallery.import_started audit record. The import must be on the chain once recorded: never an
    import whose photos are enrolled with no record of who started it, from what source, by what rules."""
    timings = []
    for _ in range(3):  # the first, cold, is slower than the rest
        began = time.monotonic()
        start = gateway_pb2.StartImportRequest(import_id=f"cut-t-{uuid.uuid4().hex[:12]}", source="/srv/a", total=2)
        await gateway.StartImport(start, metadata=ENROLLER)
        timings.append(time.monotonic() - began)
    whole_s = min(timings)
    waits = deadlines(whole_s, 60, 0.1, 1.28)  # the window is the create's acknowledgement: narrow
    import_ids = [f"cut-{step}-{uuid.uuid4().hex[:12]}" for step in range(len(waits))]
    gave_up = set()
    for import_id, wait in zip(import_ids, waits, strict=True):
        start = gateway_pb2.StartImportRequest(import_id=import_id, source="/srv/bookings", total=2)
        if await cut_short(gateway.StartImport(start, metadata=ENROLLER, timeout=wait)):
            gave_up.add(import_id)
    missing: list[str] = []

    async def every_recorded_import_audited() -> bool:
        recorded = set(await import_records(stack, import_ids))
        audited_ids = (await audited(stack, ["gallery.import_started"], "import_id"))["gallery.import_started"]
        missing[:] = sorted(recorded - audited_ids)
        # A cut start runs on after its caller left: wait for at least one to have been recorded.
        return not missing and bool(recorded & gave_up)

    await nothing_left_half_done(
        every_recorded_import_audited,
        missing,
        f"{len(import_ids)} imports recorded were never audited",
        f"no import start was cut short after it recorded the import (a whole one took {whole_s * 1000:.0f} ms):"
        " the deadlines no longer fall inside one",
    )


async def test_an_import_recorded_by_a_gateway_that_died_before_auditing_it_is_audited_when_resumed(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path
) -> None:
    """A gateway recorded a new import and was killed before its gallery.import_started record. The
    importer's retry resumes the import: the chain must then hold its start once, by whoever started
    it and with the rules it was started with, however often it is resumed."""
    import_id = f"dead-{uuid.uuid4().hex[:12]}"
    started = Timestamp()
    started.GetCurrentTime()
    record = ingest_pb2.ImportRecord(
        import_id=import_id,
        source="/srv/bookings/dead",
        total=2,
        started_by="first-enroller",
        started_at=started,
        rules=ingest_pb2.ImportRules(min_face_px=31, min_blur=7.5),
        model_id="sface-2021dec",
    )
    async with a_dead_gateway(stack) as bus:
        await (await bus.jetstream.key_value(IMPORTS_BUCKET)).create(import_id, record.SerializeToString())
    resume = gateway_pb2.StartImportRequest(import_id=import_id, source="/srv/bookings/dead", total=2)
    await asyncio.gather(*(gateway.StartImport(resume, metadata=ENROLLER) for _ in range(3)))
    await gateway.StartImport(resume, metadata=ENROLLER)
    await settled_records(stack, gateway, samples, "none", [])
    records = [
        r for r in await audit_records(stack, kinds=["gallery.import_started"]) if import_id in r.event.details_json
    ]
    assert len(records) == 1, f"the import's start is on the chain {len(records)} times, not once"
    details = json.loads(records[0].event.details_json)
    assert records[0].event.actor == "first-enroller"
    assert (details["source"], details["total"], details["model_id"]) == ("/srv/bookings/dead", 2, "sface-2021dec")
    assert details["rules"] == {"min_face_px": 31, "min_blur": 7.5}


async def test_an_import_finished_by_a_status_read_cut_short_is_audited_finished(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack
) -> None:
    """The status read that finds every photo of an import settled records it finished: the record
    and the gallery.import_finished audit event (its counts, on the event feed). An importer that
    stops waiting part way must never leave a finished import the chain does not show finished: no
    later read would record it, since the import is already finished."""

    async def ready(import_id: str) -> gateway_pb2.GetImportRequest:
        """An import of one photo the gateway settles at once (no subject), not yet read."""
        start = gateway_pb2.StartImportRequest(import_id=import_id, source="/srv/finish", total=1)
        await gateway.StartImport(start, metadata=ENROLLER)
        submit = gateway_pb2.SubmitImportItemsRequest(
            import_id=import_id, items=[gateway_pb2.ImportItem(item=0, subject_id="", image=b"photo")]
        )
        assert (await gateway.SubmitImportItems(submit, metadata=ENROLLER)).settled == 1
        return gateway_pb2.GetImportRequest(import_id=import_id)

    timings = []
    for _ in range(3):  # the first, cold, is slower than the rest
        read = await ready(f"fin-t-{uuid.uuid4().hex[:12]}")
        began = time.monotonic()
        assert (await gateway.GetImport(read, metadata=ENROLLER)).record.HasField("finished_at")
        timings.append(time.monotonic() - began)
    whole_s = min(timings)
    waits = deadlines(whole_s, 60, 0.1, 1.28)
    import_ids = [f"fin-{step}-{uuid.uuid4().hex[:12]}" for step in range(len(waits))]
    gave_up = set()
    for import_id, wait in zip(import_ids, waits, strict=True):
        read = await ready(import_id)
        if await cut_short(gateway.GetImport(read, metadata=ENROLLER, timeout=wait)):
            gave_up.add(import_id)
    missing: list[str] = []

    async def every_finished_import_audited() -> bool:
        finished = {
            i for i, record in (await import_records(stack, import_ids)).items() if record.HasField("finished_at")
        }
        audited_ids = (await audited(stack, ["gallery.import_finished"], "import_id"))["gallery.import_finished"]
        missing[:] = sorted(finished - audited_ids)
        # The gateway's sweep finishes the imports whose reads were cut before: wait for them all.
        return not missing and finished == set(import_ids)

    await nothing_left_half_done(
        every_finished_import_audited,
        missing,
        f"{len(import_ids)} imports ({len(gave_up)} reads cut short) were recorded finished and never audited finished",
        f"the gateway's sweep did not finish all {len(import_ids)} imports",
    )


async def test_import_status_reads_leave_no_consumers_behind_on_the_results_stream(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack
) -> None:
    """Each status read catches an import's tally up through a consumer of the results stream made
    for that read. nats-server keeps at most 1000 consumers on a stream; one left to expire after
    its idle time (30 s) would make 1000 reads in that time (a progress page watching a few dozen
    imports) refuse every import's status, and the sweep's, until they expired."""
    start = gateway_pb2.StartImportRequest(import_id=f"reads-{uuid.uuid4().hex[:12]}", source="/srv/reads", total=2)
    await gateway.StartImport(start, metadata=ENROLLER)
    read = gateway_pb2.GetImportRequest(import_id=start.import_id)

    async def consumers() -> int:
        async with a_connection(stack, "consumer-count") as bus:
            return (await bus.jetstream.stream_info(INGEST_RESULTS_STREAM)).state.consumer_count

    before = await consumers()
    for _ in range(30):
        assert not (await gateway.GetImport(read, metadata=ENROLLER)).record.HasField("finished_at")
    left = await consumers() - before
    assert left < 5, f"30 status reads left {left} consumers on the results stream"

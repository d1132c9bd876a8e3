"""Client request ids through the running services: a retried Search, Enroll or DeleteSubject gets the
first call's answer, makes no second search, record or audit entry, and racing retries, a refusal
and a restart of the gateway keep it so."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from pathlib import Path

import grpc
import jwt
import pytest

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_gateway.idempotency import STALE_AFTER_S, _Entry
from candor_kit import AuditPublisher, Bus
from candor_kit.subjects import REQUESTS_BUCKET
from tests.integration.conftest import InProcessStack, as_user
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
    user = jwt.decode(INVESTIGATOR[0][1].removeprefix("Bearer "), options={"verify_signature": False})["sub"]
    key = hashlib.sha256(f"{user}\n{asked.DESCRIPTOR.full_name}\n{request_id}".encode()).hexdigest()
    digest = hashlib.sha256(asked.SerializeToString(deterministic=True)).hexdigest()
    dead_search_id = str(uuid.uuid4())
    recorded = [{"rank": 1, "subject_id": "recorded-only", "distance": 0.123456, "record_id": str(uuid.uuid4())}]
    bus = await Bus.connect(stack.nats_url, "dead-gateway")
    try:
        register = await bus.jetstream.key_value(REQUESTS_BUCKET)
        stale = _Entry(digest, time.time() - STALE_AFTER_S - 5, operation_id=dead_search_id)
        await register.create(key, stale.encode())
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
    finally:
        await bus.close()

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

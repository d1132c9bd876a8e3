"""Deleting one enrolled record through the running services: the record, its stored photo and the
deletion's record on the chain, each once, however often the deletion is sent, in parallel or again
after a gateway died part way (the matcher had deleted the record; the photo and the chain's record
were still to come)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import grpc
import pytest

from candor.common.v1 import common_pb2
from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor.matcher.v1 import matcher_pb2
from candor_gateway.photos import PhotoStore
from candor_kit import Bus
from candor_kit.subjects import MATCH_DELETE_RECORD
from tests.integration.conftest import InProcessStack
from tests.integration.test_idempotency import settled_records
from tests.integration.test_search_flow import ENROLLER, audit_records

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def enrolled(gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path) -> tuple[str, str]:
    """A record of its own (a subject id no other test uses): its subject and record ids."""
    subject = f"del-{uuid.uuid4().hex[:8]}"
    reply = await gateway.Enroll(
        gateway_pb2.EnrollRequest(image=(samples / "obama3.jpg").read_bytes(), subject_id=subject), metadata=ENROLLER
    )
    return subject, reply.record_id


async def deletions_recorded(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, record_id: str
) -> list[dict[str, object]]:
    """The details of every ``record.deleted`` record of ``record_id``, once everything the gateway
    wrote before this call is on the chain."""
    await settled_records(stack, gateway, samples, "none", [])
    records = await audit_records(stack, kinds=["record.deleted"], limit=10000)
    details = [json.loads(r.event.details_json) for r in records]
    return [d for d in details if d.get("record_id") == record_id]


async def delete(
    gateway: gateway_pb2_grpc.GatewayServiceStub, record_id: str, reason: str = "wrong person enrolled"
) -> grpc.StatusCode:
    """How the gateway answers one DeleteRecord."""
    try:
        reply = await gateway.DeleteRecord(
            gateway_pb2.DeleteRecordRequest(record_id=record_id, reason=reason), metadata=ENROLLER
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    assert reply.deleted
    return grpc.StatusCode.OK


async def test_racing_deletes_of_one_record_delete_it_and_record_it_once(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, store: PhotoStore
) -> None:
    """Six deletions of one record at once (two admins, a double click, two gateway replicas): the
    record and its photo are gone, and the chain says so once, with the photo counted once."""
    subject, record_id = await enrolled(gateway, samples)
    answers = await asyncio.gather(*(delete(gateway, record_id) for _ in range(6)))
    assert grpc.StatusCode.OK in answers and set(answers) <= {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}
    assert await store.header("gallery", record_id) is None
    recorded = await deletions_recorded(stack, gateway, samples, record_id)
    assert [(d["subject_id"], d["photos_deleted"]) for d in recorded] == [(subject, 1)], recorded
    # The matcher records each call it was asked (six), and says which one deleted the record.
    matched = [
        json.loads(r.event.details_json)
        for r in await audit_records(stack, kinds=["matcher.record_deleted"], limit=10000)
        if record_id in r.event.details_json
    ]
    assert sorted(m["deleted"] for m in matched) == [False] * 5 + [True]
    assert await delete(gateway, record_id) == grpc.StatusCode.NOT_FOUND  # nothing left to delete


async def test_a_record_deletion_a_gateway_died_part_way_through_is_finished_by_its_retry(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, store: PhotoStore
) -> None:
    """A gateway killed after the matcher deleted the record answered nothing; the admin sends the
    deletion again. The retry must finish it: the stored photo deleted (an expunged photo is never
    kept), and the deletion on the chain once, with its reason. Before, the retry was refused
    NOT_FOUND, and the photo stayed in the store with nothing left to delete it."""
    subject, record_id = await enrolled(gateway, samples)
    bus = await Bus.connect(stack.nats_url, "dead-gateway")
    try:  # what the gateway asks the matcher first, as the gateway asks it
        matcher = await bus.request(
            MATCH_DELETE_RECORD,
            matcher_pb2.DeleteRecordRequest(record_id=record_id, origin=common_pb2.Origin(actor="enroller")),
            matcher_pb2.DeleteRecordResponse,
            30,
        )
    finally:
        await bus.close()
    assert matcher.deleted
    assert await delete(gateway, record_id, "court order 2026-17") == grpc.StatusCode.OK
    assert await store.header("gallery", record_id) is None, "the expunged record's photo was kept"
    recorded = await deletions_recorded(stack, gateway, samples, record_id)
    assert [(d["subject_id"], d["reason"], d["photos_deleted"]) for d in recorded] == [
        (subject, "court order 2026-17", 1)
    ], recorded
    assert await delete(gateway, record_id) == grpc.StatusCode.NOT_FOUND
    assert len(await deletions_recorded(stack, gateway, samples, record_id)) == 1

"""200 searches made while the audit service is down all land in the chain after it restarts,
each exactly once: the gateway stores each event on JetStream before it answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.integration.conftest import InProcessStack, as_user
from tests.integration.test_search_flow import audit_records
from tests.waiting import eventually

INVESTIGATOR = as_user("investigator-token")
CASE = "CASE-DURABILITY"
SEARCHES = 200


async def test_two_hundred_searches_while_audit_is_down_are_each_chained_once(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    probe = (samples / "biden.jpg").read_bytes()
    request = gateway_pb2.SearchRequest(probe_image=probe, case_number=CASE, purpose="investigation")
    await stack.stop("audit")
    try:
        search_ids: list[str] = []
        for batch in range(0, SEARCHES, 8):  # eight at a time: under the gateway's in-flight limit
            answers = await asyncio.gather(
                *(gateway.Search(request, metadata=INVESTIGATOR) for _ in range(batch, min(batch + 8, SEARCHES)))
            )
            search_ids += [answer.search_id for answer in answers]
    finally:
        await stack.start("audit")
    assert len(set(search_ids)) == SEARCHES

    async def all_chained() -> bool:
        # Searches only: each also leaves other records of the case (its probe's deletion, when it
        # returned no candidate), which would end the wait before every search is chained.
        records = await audit_records(stack, case_number=CASE)
        return sum(1 for record in records if record.event.kind == "search.completed") >= SEARCHES

    await eventually(all_chained, timeout_s=120)
    records = await audit_records(stack, case_number=CASE)
    chained = [record.event.event_id for record in records if record.event.kind == "search.completed"]
    assert sorted(chained) == sorted(search_ids)  # every one, each exactly once
    verdict = await gateway.VerifyAudit(gateway_pb2.VerifyAuditRequest(), metadata=as_user("auditor-token"))
    assert verdict.ok

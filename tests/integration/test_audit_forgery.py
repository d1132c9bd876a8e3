"""An audit event enters the chain only from the service that owns its kind.

This stack's nats-server has no users, so anyone may publish anywhere: what is left is the audit
service's own check of the publisher that the subject names (the local stack's and the
deployments' NATS users add that nobody can publish under another service's name; see
tests/deploy/test_nats_permissions.py and tests/e2e/test_attacks.py).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from candor.audit.v1 import audit_pb2
from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_kit import Bus, subjects
from candor_kit.audit_records import REFUSED_KIND
from tests.integration.conftest import InProcessStack, as_user
from tests.integration.test_governance import gallery, search_as, status_seen_by  # noqa: F401 - fixture
from tests.integration.test_search_flow import audit_records
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

INVESTIGATOR = as_user("investigator-token")
AUDITOR = as_user("auditor-token")


def forged_review(search_id: str, reviewer: str) -> audit_pb2.AuditEvent:
    """A review.submitted that no reviewer made: a confirmation of rank 1 in ``reviewer``'s name."""
    now = Timestamp()
    now.GetCurrentTime()
    details = {"search_id": search_id, "rank": 1, "subject_id": "obama", "decision": "confirm", "role": "reviewer"}
    return audit_pb2.AuditEvent(
        event_id=str(uuid.uuid4()),
        kind="review.submitted",
        occurred_at=now,
        actor=reviewer,
        case_number="FORGE-1",
        purpose="investigation",
        details_json=json.dumps({**details, "notes": ""}),
    )


async def test_reviews_forged_by_another_service_stay_out_of_the_chain_and_the_attempt_is_recorded(
    stack: InProcessStack,
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    samples: Path,
    gallery: None,  # noqa: F811
) -> None:
    search_id = await search_as(gateway, samples, INVESTIGATOR, "FORGE-1")
    forged = {
        # The detector's name on a gateway's kind; no name at all (the subjects before sources);
        # and the gateway's name on a subject whose kind is not the event's.
        subjects.audit_subject("detector", "review.submitted"): forged_review(search_id, "rita"),
        f"{subjects.AUDIT_EVENT_PREFIX}.review.submitted": forged_review(search_id, "rob"),
        subjects.audit_subject("gateway", "search.viewed"): forged_review(search_id, "rob"),
    }
    bus = await Bus.connect(stack.nats_url, "forger")
    try:
        for subject, event in forged.items():
            await bus.publish_durable(subject, event, msg_id=event.event_id)
    finally:
        await bus.close()

    async def refusals() -> list[dict[str, str]]:
        records = await audit_records(stack, kinds=[REFUSED_KIND])
        claimed = {event.event_id for event in forged.values()}
        return [
            details
            for record in records
            if (details := json.loads(record.event.details_json))["claimed_event_id"] in claimed
        ]

    async def all_refused() -> bool:
        return len(await refusals()) == len(forged)

    await eventually(all_refused)
    assert {r["subject"] for r in await refusals()} == set(forged)
    assert {r["reason"] for r in await refusals()} == {
        "detector does not own audit events of this kind",
        "the subject names no service that writes audit events",
        "the event's kind is not the one its subject names",
    }
    chained = {r.event.event_id for r in await audit_records(stack, case_number="FORGE-1")}
    assert not chained & {event.event_id for event in forged.values()}
    # Two forged confirmations made no lead, and the chain still verifies.
    assert await status_seen_by(gateway, INVESTIGATOR, search_id) == gateway_pb2.CANDIDATE_STATUS_PENDING
    verified = await gateway.VerifyAudit(gateway_pb2.VerifyAuditRequest(), metadata=AUDITOR)
    assert verified.ok

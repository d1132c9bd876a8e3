"""The event feed through the running services: a search, two reviews making a LEAD and a
deletion reach an integration's durable consumer as lifecycle events, and nothing is lost or
doubled (beyond at least once) while the follower, the gateway and the audit service restart."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp

from candor.events.v1 import events_pb2
from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_audit.feed import FEED_KINDS
from candor_client import EventFollower, consumer_config
from tests.integration.conftest import InProcessStack, as_user
from tests.integration.test_governance import review
from tests.integration.test_search_flow import audit_records
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")
INVESTIGATOR, ENROLLER = as_user("investigator-token"), as_user("enroller-token")
RITA, ROB = as_user("reviewer-a"), as_user("reviewer-b")


@pytest_asyncio.fixture(loop_scope="session")
async def jetstream(stack: InProcessStack) -> AsyncIterator[nats.js.JetStreamContext]:
    client = await nats.connect(stack.nats_url)
    yield client.jetstream()
    await client.close()


async def drain(follower: EventFollower, into: dict[int, list[str]], until: int, timeout_s: float = 20) -> None:
    """Fetch and acknowledge events until ``until`` distinct ones were received (each delivery noted)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(into) < until and asyncio.get_running_loop().time() < deadline:
        for delivery in await follower.fetch(20, timeout_s=1):
            into.setdefault(delivery.event.record_sequence, []).append(delivery.event.kind)
            await delivery.ack()


async def test_a_lead_reaches_the_follower_and_nothing_is_lost_across_restarts(
    stack: InProcessStack,
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    jetstream: nats.js.JetStreamContext,
    samples: Path,
) -> None:
    started = dt.datetime.now(dt.UTC)
    await gateway.Enroll(
        gateway_pb2.EnrollRequest(image=(samples / "obama.jpg").read_bytes(), subject_id="obama"), metadata=ENROLLER
    )
    follower = EventFollower(jetstream, consumer_config("feed-test-cms", since=started))
    received: dict[int, list[str]] = {}
    probe = (samples / "obama2.jpg").read_bytes()
    found = await gateway.Search(
        gateway_pb2.SearchRequest(probe_image=probe, case_number="FEED-1", purpose="investigation"),
        metadata=INVESTIGATOR,
    )
    await review(gateway, RITA, found.search_id, gateway_pb2.DECISION_CONFIRM)
    await review(gateway, ROB, found.search_id, gateway_pb2.DECISION_CONFIRM)
    await drain(follower, received, until=2)
    await follower.close()

    # While the follower is away: the gateway and the audit service restart, and work goes on.
    await stack.stop("gateway")
    await stack.start("gateway")
    await stack.stop("audit")
    second = await gateway.Search(  # recorded on the audit stream while the chain's writer is down
        gateway_pb2.SearchRequest(probe_image=probe, case_number="FEED-2", purpose="investigation"),
        metadata=INVESTIGATOR,
    )
    await stack.start("audit")
    await gateway.Enroll(
        gateway_pb2.EnrollRequest(image=(samples / "biden.jpg").read_bytes(), subject_id="FEED-BIDEN"),
        metadata=ENROLLER,
    )
    await gateway.DeleteSubject(
        gateway_pb2.DeleteSubjectRequest(subject_id="FEED-BIDEN", reason="released"), metadata=ENROLLER
    )

    since = Timestamp()
    since.FromDatetime(started)

    async def chain_holds_them() -> bool:
        records = await audit_records(stack, since=since, kinds=list(FEED_KINDS))
        return {r.event.event_id for r in records} >= {found.search_id, second.search_id} and any(
            r.event.kind == "subject.deleted" for r in records
        )

    await eventually(chain_holds_them)
    in_chain = {r.sequence: r for r in await audit_records(stack, since=since, kinds=list(FEED_KINDS))}

    again = EventFollower(jetstream, consumer_config("feed-test-cms", since=started))
    await drain(again, received, until=len(in_chain))
    await again.close()

    # Every lifecycle record of the chain since the start reached the follower, and nothing else.
    assert sorted(received) == sorted(in_chain)
    assert all(len(kinds) == 1 for kinds in received.values()), received  # each acknowledged delivery once
    by_kind = {in_chain[seq].event.kind: in_chain[seq] for seq in received}
    assert {"search.completed", "review.confirmed", "subject.deleted"} <= set(by_kind)

    # The LEAD event names the search, the candidate and the status; the integration needs no poll.
    leads = await jetstream.get_last_msg("CANDOR_EVENTS", "candor.events.v1.review.confirmed")
    lead = events_pb2.LifecycleEvent()
    lead.ParseFromString(leads.data or b"")
    assert lead.search_id == found.search_id and lead.case_number == "FEED-1"
    assert lead.status == gateway_pb2.CANDIDATE_STATUS_LEAD and lead.rank == 1 and lead.subject_id
    assert lead.actor == "rob" and not lead.settled_by_supervisor

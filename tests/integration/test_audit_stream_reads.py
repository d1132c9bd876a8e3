"""Verifying the chain reads the audit stream and the outside checkpoint stream; those reads must
not leave their consumers behind for the server to expire."""

from __future__ import annotations

import asyncio

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_kit.subjects import AUDIT_CHECKPOINT_STREAM, AUDIT_STREAM
from tests.integration.conftest import InProcessStack, as_user
from tests.integration.test_idempotency import a_connection

AUDITOR = as_user("auditor-token")
VERIFICATIONS = 30


async def test_verifications_leave_no_consumers_behind_on_the_audit_streams(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack
) -> None:
    """Each verification reads both streams through a consumer made for the read. nats-server keeps
    at most 1000 consumers on a stream; one merely unsubscribed stays for its idle time (30 s), so
    an auditor's tool verifying in a loop (or several at once) would, within that time, have every
    later verification refused ("maximum consumers limit reached"), and an audit service restarted
    then could not make its own consumer."""

    async def consumers() -> dict[str, int]:
        async with a_connection(stack, "consumer-count") as bus:
            return {
                stream: (await bus.jetstream.stream_info(stream)).state.consumer_count
                for stream in (AUDIT_STREAM, AUDIT_CHECKPOINT_STREAM)
            }

    before = await consumers()
    for _ in range(VERIFICATIONS // 3):  # three at once, as tools and people do
        verdicts = await asyncio.gather(
            *(gateway.VerifyAudit(gateway_pb2.VerifyAuditRequest(), metadata=AUDITOR) for _ in range(3))
        )
        assert all(verdict.ok for verdict in verdicts), [verdict.problem for verdict in verdicts]
    after = await consumers()
    left = {stream: after[stream] - before[stream] for stream in after}
    assert all(count < 5 for count in left.values()), f"{VERIFICATIONS} verifications left {left} consumers"

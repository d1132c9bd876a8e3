"""Sign-out through the running services: a session's end is on the chain once, and its token is
revoked, however often the sign-out is sent, in parallel or again after a gateway died part way."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
import pytest

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_gateway.revocations import sign_out_event_id, token_key
from candor_kit import AuditPublisher, Bus
from candor_kit.subjects import REVOKED_TOKENS_BUCKET
from candor_kit.tokens import issue_token, load_private_key
from tests.integration.conftest import AUDIENCE, LOCAL_ISSUER, TOKEN_KEY, InProcessStack
from tests.integration.cuts import electing_a_leader
from tests.integration.test_idempotency import settled_records
from tests.integration.test_search_flow import audit_records

pytestmark = pytest.mark.asyncio(loop_scope="session")


def signed_in(user: str, role: str = "investigator") -> tuple[str, tuple[tuple[str, str]]]:
    """A fresh session of ``user`` in ``role``: its token and the call metadata bearing it."""
    token = issue_token(load_private_key(TOKEN_KEY), user, [role], 3600, LOCAL_ISSUER, AUDIENCE)
    return token, (("authorization", f"Bearer {token}"),)


async def ends_recorded(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, user: str
) -> int:
    """How many session.ended records the chain holds for ``user``, once everything the gateway
    wrote before this call is in it."""
    await settled_records(stack, gateway, samples, "none", [])
    return len(await audit_records(stack, actor=user, kinds=["session.ended"]))


async def answered(gateway: gateway_pb2_grpc.GatewayServiceStub, metadata: tuple[tuple[str, str]]) -> grpc.StatusCode:
    """How the gateway answers a harmless call (a page of pending reviews: a reviewer's may) made
    with a session's token."""
    try:
        await gateway.ListPendingReviews(gateway_pb2.ListPendingReviewsRequest(limit=1), metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_racing_and_repeated_sign_outs_of_one_session_end_it_once(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path
) -> None:
    """A browser that sends its sign-out twice, a client that retries it on a timeout, a cookie
    replayed after: each is answered as done, the chain holds the session's end once, and the token
    does nothing else any more."""
    user = f"sol-{uuid.uuid4().hex[:8]}"
    _, metadata = signed_in(user)
    await asyncio.gather(*(gateway.EndSession(gateway_pb2.EndSessionRequest(), metadata=metadata) for _ in range(6)))
    await gateway.EndSession(gateway_pb2.EndSessionRequest(), metadata=metadata)
    assert await answered(gateway, metadata) == grpc.StatusCode.UNAUTHENTICATED
    ended = await ends_recorded(stack, gateway, samples, user)
    assert ended == 1, f"one session's end is on the chain {ended} times, not once"


@pytest.mark.parametrize("died_after", ["revoking", "recording"])
async def test_a_sign_out_a_gateway_died_part_way_through_is_finished_by_its_retry(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, died_after: str
) -> None:
    """A gateway killed between its two steps of a sign-out (revoking the token, recording the
    session's end) answered nothing; the desk, or the client, sends it again. The retry must be
    answered as done and leave both: the token revoked and the end on the chain, once. Never a
    revoked session the chain does not show ended, never a session the chain shows ended twice."""
    user = f"sol-{uuid.uuid4().hex[:8]}"
    token, metadata = signed_in(user)
    bus = await Bus.connect(stack.nats_url, "dead-gateway")
    try:
        if died_after == "revoking":
            await (await bus.jetstream.key_value(REVOKED_TOKENS_BUCKET)).put(token_key(token), b"revoked")
        else:  # recorded the end as the gateway does, under its one event id for this token
            audit = AuditPublisher(bus, "gateway")
            await audit.publish("session.ended", event_id=sign_out_event_id(token), actor=user, details={})
    finally:
        await bus.close()
    await gateway.EndSession(gateway_pb2.EndSessionRequest(), metadata=metadata)
    assert await answered(gateway, metadata) == grpc.StatusCode.UNAUTHENTICATED
    ended = await ends_recorded(stack, gateway, samples, user)
    assert ended == 1, f"the session's end is on the chain {ended} times, not once"


@pytest.mark.parametrize(
    ("method", "stored"),
    [("get", False), ("put", False), ("put", True)],
    ids=["call-checks-its-token", "sign-out-not-stored", "sign-out-stored-answer-lost"],
)
async def test_calls_and_sign_outs_ride_out_the_revoked_tokens_register_electing_a_leader(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    stack: InProcessStack,
    samples: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    stored: bool,
) -> None:
    """Every call's token is looked up in the register of revoked tokens, and a sign-out writes to
    it. While the register's stream elects a leader (a second or two when a NATS node of three
    dies), a read or write fails; the call must ride that out, not answer UNAVAILABLE (every call
    of every user, for the election's length), and a sign-out must still end its session: the
    token refused after, its end on the chain once."""
    user = f"sol-{uuid.uuid4().hex[:8]}"
    _, metadata = signed_in(user, "reviewer")
    failed = electing_a_leader(monkeypatch, REVOKED_TOKENS_BUCKET, method, stored=stored)
    if method == "get":
        assert await answered(gateway, metadata) == grpc.StatusCode.OK
    else:
        await gateway.EndSession(gateway_pb2.EndSessionRequest(), metadata=metadata)
        monkeypatch.undo()
        assert await answered(gateway, metadata) == grpc.StatusCode.UNAUTHENTICATED
        assert await ends_recorded(stack, gateway, samples, user) == 1
    assert len(failed) == 1, "the register was not failed"

"""Safeguards under concurrency, replays and one service's credentials, against the local process
stack with two gateway processes: the rules hold by construction, not only on the happy path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_cli import LocalStack
from tests.e2e.test_attacks import audit_rows
from tests.e2e.test_stack_cli import candor, search_json, wait_for_audit

pytestmark = pytest.mark.e2e

#: Parallel submissions per test: the issue asks for at least 20, across two gateway processes.
PARALLEL = 24


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("safeguards"), extra_env={"CANDOR_AUDIT_CHECKPOINT_INTERVAL_S": "1"})
    stack.up()
    stack.add_replica("gateway")
    candor(stack, "enroll", str(samples / "obama.jpg"), "--subject", "obama")
    yield stack
    stack.down()


def gateways(stack: LocalStack) -> list[str]:
    """The addresses of both gateway processes."""
    state = stack.state()
    assert state is not None
    found = [state.addresses[key] for key in state.pids if key.split("#")[0] == "gateway"]
    assert len(found) == 2
    return found


def submit_in_parallel(
    stack: LocalStack, token: str, search_id: str, rank: int, decisions: list[int]
) -> list[grpc.StatusCode]:
    """Send one SubmitReview per decision at the same moment, alternating between the two gateway
    processes; the status code of each call."""
    addresses = gateways(stack)
    channels = [grpc.insecure_channel(address) for address in addresses]
    stubs = [gateway_pb2_grpc.GatewayServiceStub(channel) for channel in channels]
    for channel in channels:  # connected before the burst, so the calls really overlap
        grpc.channel_ready_future(channel).result(timeout=10)

    def one(index: int) -> grpc.StatusCode:
        request = gateway_pb2.SubmitReviewRequest(
            search_id=search_id, rank=rank, decision=decisions[index], notes=f"look {index}"
        )
        try:
            stubs[index % 2].SubmitReview(request, metadata=(("authorization", f"Bearer {token}"),), timeout=60)
        except grpc.RpcError as refused:
            return refused.code()
        return grpc.StatusCode.OK

    try:
        with ThreadPoolExecutor(max_workers=len(decisions)) as pool:
            return list(pool.map(one, range(len(decisions))))
    finally:
        for channel in channels:
            channel.close()


def reviews_in_chain(stack: LocalStack, search_id: str) -> list[tuple[str, str]]:
    """Each ``review.submitted`` record of a search, (reviewer, decision), once the chain holds
    every event published so far: a search viewed now is appended after them all."""
    viewed = "SELECT COUNT(*) FROM audit_record WHERE kind = 'search.viewed' AND details_json LIKE ?"
    before = audit_rows(stack, viewed, (f"%{search_id}%",))[0][0]
    candor(stack, "review", "show", search_id)
    wait_for_audit(stack, viewed.replace("COUNT(*)", "1") + f" LIMIT 1 OFFSET {before}", (f"%{search_id}%",))
    rows = audit_rows(
        stack,
        "SELECT actor, details_json FROM audit_record WHERE kind = 'review.submitted' AND details_json LIKE ?",
        (f"%{search_id}%",),
    )
    return [(actor, json.loads(details)["decision"]) for actor, details in rows]


# --- 1: one reviewer's decision on one candidate is recorded once ---------------------------------


def test_one_reviewer_submitting_at_once_through_two_gateways_is_recorded_once_and_makes_no_lead(
    stack: LocalStack, samples: Path
) -> None:
    rita = stack.token("rita", ("reviewer",))
    confirm = [gateway_pb2.DECISION_CONFIRM] * PARALLEL
    # Three bursts: a race that a single burst can miss by luck has to be missed three times.
    for attempt in range(3):
        found = search_json(stack, samples / "obama2.jpg", f"SAFE-1.{attempt}")
        codes = submit_in_parallel(stack, rita, found["search_id"], 1, confirm)
        assert codes.count(grpc.StatusCode.OK) == 1, codes
        assert set(codes) - {grpc.StatusCode.OK} <= {grpc.StatusCode.FAILED_PRECONDITION}, codes
        assert reviews_in_chain(stack, found["search_id"]) == [("rita", "confirm")]
        shown = candor(stack, "review", "show", found["search_id"]).stdout
        assert "LEAD" not in shown and "pending" in shown, shown

    # A second reviewer, as hurried, makes it a lead with two different names on it.
    rob = stack.token("rob", ("reviewer",))
    codes = submit_in_parallel(stack, rob, found["search_id"], 1, confirm)
    assert codes.count(grpc.StatusCode.OK) == 1, codes
    lead = wait_for_audit(
        stack,
        "SELECT details_json FROM audit_record WHERE kind = 'review.confirmed' AND details_json LIKE ?",
        (f"%{found['search_id']}%",),
    )
    assert len(lead) == 1 and sorted(json.loads(lead[0][0])["reviewers"]) == ["rita", "rob"]


def test_one_reviewer_confirming_and_rejecting_at_once_keeps_one_decision(stack: LocalStack, samples: Path) -> None:
    found = search_json(stack, samples / "obama2.jpg", "SAFE-1B")
    rita = stack.token("rita", ("reviewer",))
    mixed = [gateway_pb2.DECISION_CONFIRM, gateway_pb2.DECISION_REJECT] * (PARALLEL // 2)
    codes = submit_in_parallel(stack, rita, found["search_id"], 1, mixed)
    assert codes.count(grpc.StatusCode.OK) == 1, codes
    assert len(reviews_in_chain(stack, found["search_id"])) == 1

"""A part of the pipeline that stops answering, through real processes: the gateway's search fails
UNAVAILABLE (a retryable status that says what to do), never DEADLINE_EXCEEDED or INTERNAL, and
searches succeed again as soon as the part is back. make test-scale does the same to the whole
production shape in containers (scripts/test_scale.py)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_cli import LocalStack
from candor_client import GatewayClient
from candor_client.channel import open_channel

pytestmark = pytest.mark.e2e

#: The gateway's wait for each internal request, short so the test does not wait 30 s.
REQUEST_TIMEOUT_S = 4
#: When the gateway asks a detector or embedder again (another replica, if there is one).
HEDGE_AFTER_S = 2.0
#: When the replica holding requests is killed: before the gateway asks again.
KILL_AFTER_S = 1.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Iterator[LocalStack]:
    stack = LocalStack(
        tmp_path_factory.mktemp("faults"),
        extra_env={
            "CANDOR_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
            "CANDOR_GATEWAY_HEDGE_AFTER_S": str(HEDGE_AFTER_S),
        },
    )
    state = stack.up()
    with GatewayClient(state.gateway, stack.token()) as client:
        client.enroll(samples / "obama.jpg", "obama")
    yield stack
    stack.down()


@pytest.mark.parametrize("part", ["detector", "embedder", "matcher"])
def test_a_search_while_a_part_is_paused_fails_unavailable_and_succeeds_once_it_is_back(
    stack: LocalStack, samples: Path, part: str
) -> None:
    state = stack.state()
    assert state is not None
    pid = state.pids[part]
    token = (("authorization", f"Bearer {stack.token()}"),)
    # A channel without gRPC's retries: the test sees the gateway's answer to one attempt.
    with open_channel(state.gateway, retries=False) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        os.kill(pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            with pytest.raises(grpc.RpcError) as refused:
                stub.Search(search_request(samples), metadata=token, timeout=60)
            waited = time.monotonic() - began
        finally:
            os.kill(pid, signal.SIGCONT)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
    assert part in refused.value.details() and "try again" in refused.value.details()
    assert waited < 2 * REQUEST_TIMEOUT_S
    with GatewayClient(state.gateway, stack.token()) as client:
        found = client.search(
            samples / "obama2.jpg", case_number=f"F-{part}", purpose="investigation", authorisation="W-FAULTS"
        )
        assert found.candidates[0].subject_id == "obama"


@pytest.mark.parametrize("part", ["detector", "embedder"])
def test_searches_whose_request_died_with_a_replica_are_answered_by_the_other_before_the_timeout(
    stack: LocalStack, samples: Path, part: str
) -> None:
    # A queue group gives each request to one replica at random. Requests a replica held when it
    # was killed are lost: the gateway asks again after HEDGE_AFTER_S, and the other replica
    # answers, rather than the search waiting out the request timeout and failing UNAVAILABLE.
    # The replica is paused first so that some of eight searches at once are surely in its hands.
    replica = stack.add_replica(part)
    state = stack.state()
    assert state is not None
    token = (("authorization", f"Bearer {stack.token()}"),)
    os.kill(state.pids[replica], signal.SIGSTOP)
    try:
        with open_channel(state.gateway, retries=False) as channel, ThreadPoolExecutor(8) as pool:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)

            def search() -> tuple[float, str]:
                began = time.monotonic()
                found = stub.Search(search_request(samples), metadata=token, timeout=60)
                return time.monotonic() - began, found.candidates[0].subject_id

            searches = [pool.submit(search) for _ in range(8)]
            time.sleep(KILL_AFTER_S)
            os.kill(state.pids[replica], signal.SIGKILL)
            answers = [future.result() for future in searches]
    finally:
        stack.stop_service(replica)
    assert [subject for _, subject in answers] == ["obama"] * 8
    assert max(waited for waited, _ in answers) < REQUEST_TIMEOUT_S


def search_request(samples: Path) -> gateway_pb2.SearchRequest:
    return gateway_pb2.SearchRequest(
        probe_image=(samples / "obama2.jpg").read_bytes(),
        case_number="F-PAUSED",
        purpose="investigation",
        authorisation_reference="W-FAULTS",
        client_request_id=os.urandom(8).hex(),
    )

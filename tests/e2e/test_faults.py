"""A part of the pipeline that stops answering, through real processes: the gateway's search fails
UNAVAILABLE (a retryable status that says what to do), never DEADLINE_EXCEEDED or INTERNAL, and
searches succeed again as soon as the part is back. make test-scale does the same to the whole
production shape in containers (scripts/test_scale.py)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_cli import LocalStack
from candor_client import GatewayClient
from candor_client.channel import open_channel

pytestmark = pytest.mark.e2e

#: The gateway's wait for each internal request, short so the test does not wait 30 s.
REQUEST_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Iterator[LocalStack]:
    stack = LocalStack(
        tmp_path_factory.mktemp("faults"), extra_env={"CANDOR_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S)}
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


def search_request(samples: Path) -> gateway_pb2.SearchRequest:
    return gateway_pb2.SearchRequest(
        probe_image=(samples / "obama2.jpg").read_bytes(),
        case_number="F-PAUSED",
        purpose="investigation",
        authorisation_reference="W-FAULTS",
        client_request_id=os.urandom(8).hex(),
    )

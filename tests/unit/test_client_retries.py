"""The Python client against a gateway that is briefly unavailable: gRPC retries the call by itself,
the same request with the same client request id, so the gateway can answer the retry as the first
call. The gateway here is a real gRPC server that answers UNAVAILABLE twice (a STAND-IN for a
gateway restarting; the register behind the ids is tested in test_idempotency.py)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_client import GatewayClient


class Restarting(gateway_pb2_grpc.GatewayServiceServicer):
    """Answers UNAVAILABLE to the first ``failures`` calls, then answers; keeps each call's id."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.ids: list[str] = []

    def _answer(self, request_id: str, context: grpc.ServicerContext) -> None:
        self.ids.append(request_id)
        if len(self.ids) <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    def Search(self, request: gateway_pb2.SearchRequest, context: grpc.ServicerContext) -> gateway_pb2.SearchResponse:  # noqa: N802
        self._answer(request.client_request_id, context)
        return gateway_pb2.SearchResponse(search_id="S-1", probe_sha256=str(len(request.probe_image)))

    def DeleteSubject(  # noqa: N802
        self, request: gateway_pb2.DeleteSubjectRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.DeleteSubjectResponse:
        self._answer(request.client_request_id, context)
        return gateway_pb2.DeleteSubjectResponse(deleted_records=1)

    def SeedProficiencyTest(  # noqa: N802
        self, request: gateway_pb2.SeedProficiencyTestRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.SeedProficiencyTestResponse:
        self._answer(request.client_request_id, context)
        return gateway_pb2.SeedProficiencyTestResponse(search_id="S-2")


@pytest.fixture
def gateway() -> Iterator[tuple[Restarting, str]]:
    servicer = Restarting(failures=2)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.max_receive_message_length", 16 << 20)]
    )
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def test_a_search_is_retried_with_its_request_id_photo_and_all(gateway: tuple[Restarting, str]) -> None:
    servicer, address = gateway
    photo = b"\xff\xd8" + b"x" * (2 << 20)  # 2 MiB: above gRPC's default 256 KiB retry buffer
    with GatewayClient(address, "token", timeout_s=30) as client:
        answer = client.search(photo, "CASE-1", "investigation")
    assert answer.search_id == "S-1" and answer.probe_sha256 == str(len(photo))
    assert len(servicer.ids) == 3 and len(set(servicer.ids)) == 1 and servicer.ids[0]


def test_a_proficiency_seeding_is_retried_under_one_request_id(gateway: tuple[Restarting, str]) -> None:
    """A seeding sent without an id gets one from the client, kept by gRPC's retries, so the
    gateway seeds one test (the caller's own request is left as it was)."""
    servicer, address = gateway
    request = gateway_pb2.SeedProficiencyTestRequest(case_number="2026-PT-1", same_person=True)
    with GatewayClient(address, "token", timeout_s=30) as client:
        assert client.seed_proficiency_test(request).search_id == "S-2"
    assert len(servicer.ids) == 3 and len(set(servicer.ids)) == 1 and servicer.ids[0]
    assert not request.client_request_id


def test_each_call_has_its_own_id_unless_the_caller_names_one(gateway: tuple[Restarting, str]) -> None:
    servicer, address = gateway
    servicer.failures = 0
    with GatewayClient(address, "token", timeout_s=30) as client:
        client.delete_subject("S-1", "court order")
        client.delete_subject("S-1", "court order")
        client.delete_subject("S-1", "court order", request_id="ticket-4711")
    assert len(set(servicer.ids)) == 3 and servicer.ids[2] == "ticket-4711"


def test_a_name_with_two_gateways_behind_it_gets_calls_spread_over_both_and_survives_one_going() -> None:
    """Replicas behind one name (Docker's DNS, a headless Service, or a list of addresses as here):
    the client spreads its calls over all (round_robin), and when one goes, its retries land on the
    other, so no call fails."""
    servicers, servers, ports = [], [], []
    for _ in range(2):
        servicer = Restarting(failures=0)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        servicers.append(servicer)
        servers.append(server)
    try:
        with GatewayClient(f"ipv4:127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}", "token", timeout_s=30) as client:
            for _ in range(10):
                client.search(b"photo", "CASE-1", "investigation")
            # Both take calls (round_robin starts on whichever connected first).
            assert sorted(len(servicer.ids) for servicer in servicers) in ([4, 6], [5, 5])
            before = len(servicers[1].ids)
            servers[0].stop(None)
            for _ in range(4):
                assert client.search(b"photo", "CASE-1", "investigation").search_id == "S-1"
        assert len(servicers[1].ids) == before + 4  # every call after the stop, none lost
    finally:
        for server in servers:
            server.stop(None)

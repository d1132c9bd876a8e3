"""A gateway that vanishes in the middle of a call (its host gone, its process frozen, a network
cut: no FIN ever comes) is noticed by the client's keepalive pings within seconds, and the call is
retried on another gateway, instead of hanging until the caller's deadline. The scale-out run saw
two searches wait their full 60 s after a gateway was killed. The servers here are real gRPC
servers in their own processes, one of them frozen with SIGSTOP."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from candor_cli.processes import free_port
from candor_client import GatewayClient

#: A gateway stand-in in its own process, with the gRPC server options Candor's services use: its
#: Search answers at once, or, started as "slow", after 3 s to a search of case SLOW (a call in
#: flight to freeze), saying on its output that it has one.
SERVER = """
import asyncio, sys
import grpc
from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_kit.grpc_server import KEEPALIVE_SERVER_OPTIONS

class Gateway(gateway_pb2_grpc.GatewayServiceServicer):
    async def Search(self, request, context):
        if sys.argv[2] == "slow" and request.case_number == "SLOW":
            print("in flight", flush=True)
            await asyncio.sleep(3)
        return gateway_pb2.SearchResponse(search_id=sys.argv[2])

async def main():
    server = grpc.aio.server(options=KEEPALIVE_SERVER_OPTIONS)
    gateway_pb2_grpc.add_GatewayServiceServicer_to_server(Gateway(), server)
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()

asyncio.run(main())
"""


@pytest.fixture
def gateways() -> Iterator[list[tuple[int, subprocess.Popen[str]]]]:
    started = []
    for name in ("slow", "answering"):
        port = free_port()
        process = subprocess.Popen([sys.executable, "-c", SERVER, str(port), name], stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        started.append((port, process))
    yield started
    for _, process in started:
        os.kill(process.pid, signal.SIGCONT)
        process.kill()
        process.wait(10)


def test_a_call_on_a_gateway_that_froze_is_retried_on_the_other_within_seconds(
    gateways: list[tuple[int, subprocess.Popen[str]]],
) -> None:
    (slow_port, slow), (answering_port, _) = gateways
    with GatewayClient(f"ipv4:127.0.0.1:{slow_port},127.0.0.1:{answering_port}", "token", timeout_s=60) as client:
        # Both connected: round_robin passes over a gateway not yet connected, so warm up until
        # each has answered (a slow machine connects the second one late).
        answered = {client.search(b"photo", "WARM", "investigation").search_id for _ in range(4)}
        while answered != {"slow", "answering"} and len(answered) < 50:
            answered.add(client.search(b"photo", "WARM", "investigation").search_id)
        assert answered == {"slow", "answering"}, f"only {answered} answered the warm-up"
        # One call at a time until round_robin gives one to the slow gateway; the gateway says when
        # it holds it, and is frozen then, with the call in flight (not after a guessed sleep).
        with ThreadPoolExecutor(1) as pool:
            for _ in range(10):
                call = pool.submit(client.search, b"photo", "SLOW", "investigation")
                if _line_within(slow, 5) == "in flight":
                    break
                assert call.result(timeout=10).search_id == "answering"
            else:
                pytest.fail("round_robin never sent a call to the slow gateway")
            os.kill(slow.pid, signal.SIGSTOP)
            began = time.monotonic()
            answer = call.result(timeout=90).search_id
            waited = time.monotonic() - began
    assert answer == "answering"
    # Found by the keepalive ping and retried: a ping goes every 10 s (so within 10 s of the freeze,
    # whenever the last one went) and fails 5 s unanswered, so 5 to 15 s after the freeze; never at
    # once (the call was in flight), never at the 60 s deadline.
    assert 4.5 < waited < 30, f"the call on the frozen gateway waited {waited:.1f} s"


def _line_within(process: subprocess.Popen[str], seconds: float) -> str | None:
    """The process's next line of output, or None if none comes within ``seconds``."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], seconds)
    return process.stdout.readline().strip() if ready else None

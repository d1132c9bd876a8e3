"""gRPC serving: health states, TLS, and the error → status map."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import nats.errors
import nats.js.errors
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from candor_cli.processes import free_port
from candor_kit import GRPC_STATUS, ErrorCode, GrpcServer
from candor_kit.grpc_server import rpc, service_token_sha256
from tests.conftest import self_signed


@contextlib.asynccontextmanager
async def serving(name: str, method: Callable[..., Awaitable[bytes]]) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a GrpcServer on a free port serving ``method`` as /svc/``name`` (bytes in, bytes out)."""
    port = free_port()
    server = GrpcServer(f"127.0.0.1:{port}", 1 << 20, ["svc"])
    handler = grpc.method_handlers_generic_handler("svc", {name: grpc.unary_unary_rpc_method_handler(method)})
    server.server.add_generic_rpc_handlers((handler,))
    await server.start()
    await server.mark_serving()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(0)


async def health(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="svc"), timeout=5)
    return reply.status


async def test_health_is_not_serving_until_marked_then_not_serving_on_stop() -> None:
    port = free_port()
    server = GrpcServer(f"127.0.0.1:{port}", 1 << 20, ["svc"])
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert await health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        await server.mark_serving()
        assert await health(channel) == health_pb2.HealthCheckResponse.SERVING
    await server.stop(0)


async def test_tls_server_answers_only_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    server = GrpcServer(f"127.0.0.1:{port}", 1 << 20, ["svc"], str(cert), str(key))
    await server.start()
    await server.mark_serving()
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
            assert await health(channel) == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await health_pb2_grpc.HealthStub(plaintext).Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


def test_every_error_code_maps_to_the_grpc_status_of_the_same_name() -> None:
    assert {code.name for code in GRPC_STATUS.values()} == {code.value for code in ErrorCode}
    assert GRPC_STATUS[ErrorCode.PERMISSION_DENIED] is grpc.StatusCode.PERMISSION_DENIED


async def test_an_internal_api_answers_only_calls_that_carry_the_service_token() -> None:
    port = free_port()
    token = "s" * 64
    # The server knows the token by its digest alone; presenting the digest opens nothing.
    digest = service_token_sha256(token)
    server = GrpcServer(f"127.0.0.1:{port}", 1 << 20, ["svc"], service_token_sha256=digest)

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler("svc", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    server.server.add_generic_rpc_handlers((handler,))
    await server.start()
    await server.mark_serving()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/svc/Echo")
            wrong = ("Bearer wrong", token, f"Bearer {digest}", f"Bearer sha256:{digest}")
            for metadata in ((), *((("authorization", value),) for value in wrong)):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(b"ping", metadata=metadata, timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "service token" in (refused.value.details() or "")
            assert await call(b"ping", metadata=(("authorization", f"Bearer {token}"),), timeout=5) == b"ping"
            # Probes carry no token: health stays open.
            assert await health(channel) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)


@pytest.mark.parametrize(
    "trouble",
    [nats.errors.TimeoutError(), nats.errors.NoRespondersError(), nats.js.errors.ServiceUnavailableError()],
    ids=["timeout", "no responders", "jetstream unavailable"],
)
async def test_a_message_bus_that_does_not_answer_makes_a_call_unavailable_not_internal(trouble: Exception) -> None:
    """While a NATS node restarts, a JetStream call (the photo store, a key-value register) can time
    out or find no stream leader: the scale-out run saw searches and import batches fail INTERNAL.
    They are UNAVAILABLE: a retry, which clients make, succeeds once the cluster has moved on."""

    class Servicer:
        @rpc("svc")
        async def Echo(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # noqa: N802
            raise trouble

    async with serving("Echo", Servicer().Echo) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.unary_unary("/svc/Echo")(b"ping", timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "try again" in (refused.value.details() or "")


@pytest.mark.parametrize("to_the_end", ["two-step change", ""], ids=["runs to its end", "stops"])
async def test_a_call_whose_caller_stops_waiting_runs_to_its_end_only_when_the_method_says_so(to_the_end: str) -> None:
    """A method marked ``to_the_end`` (a change whose steps must not be split) goes on after its
    caller's deadline passes; an unmarked one (a search nobody waits for) stops there."""
    steps: list[str] = []
    first_done = asyncio.Event()

    class Servicer:
        @rpc("svc", to_the_end=to_the_end)
        async def Change(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # noqa: N802
            steps.append("first")
            first_done.set()
            await asyncio.sleep(0.3)
            steps.append("second")
            return request

    async with serving("Change", Servicer().Change) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await channel.unary_unary("/svc/Change")(b"ping", timeout=0.15)
        assert cut.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert first_done.is_set(), "the call was cut before it began: the deadline is too short"
        await asyncio.sleep(0.6)  # the server still runs: a call that runs on can end
        assert steps == (["first", "second"] if to_the_end else ["first"])

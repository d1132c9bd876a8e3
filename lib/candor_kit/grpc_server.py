"""gRPC serving with the standard health service, trace extraction and the error → status map."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from candor_kit import metrics
from candor_kit.bus import BUS_TROUBLE
from candor_kit.errors import CandorError, ErrorCode, InvalidInput
from candor_kit.tasks import run_to_the_end
from candor_kit.telemetry import extract_context

log = structlog.get_logger("candor.grpc")
_tracer = trace.get_tracer("candor.grpc")

#: The one map from Candor's error codes to gRPC status codes.
GRPC_STATUS: dict[ErrorCode, grpc.StatusCode] = {code: grpc.StatusCode[code.value] for code in ErrorCode}

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])
#: The rule a call without the service token breaks, in the refusals metric.
SERVICE_TOKEN_RULE = "service_token"
#: gRPC health's methods, open without the service token (probes carry none).
HEALTH_METHODS = "/grpc.health.v1.Health/"


#: Clients ping a connection every 10 s while a call waits on it (candor_client.channel), to find a
#: server that vanished without closing it; the server must accept those pings, or it answers
#: them with GOAWAY and ends the calls.
KEEPALIVE_SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
]


def rpc(service: str, *, to_the_end: str = "") -> Callable[[Handler], Handler]:
    """Decorate an async servicer method: a SERVER span from the caller's traceparent, and
    CandorError → gRPC status. Unexpected errors become INTERNAL without leaking details.

    With ``to_the_end`` (what the method does, in words for the log), a call begun runs to its end
    when its caller stops waiting (its deadline passed, its connection dropped): for a change whose
    steps must not be split, such as a record and its audit record. Without it, the call stops
    there, so that an overloaded service sheds work nobody waits for."""

    def decorate(method: Handler) -> Handler:
        name = f"{service}/{method.__name__}"

        @functools.wraps(method)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            parent = extract_context(context.invocation_metadata() or ())
            started = time.perf_counter()
            code = "OK"
            with _tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER) as span:
                span.set_attribute("rpc.system", "grpc")
                try:
                    if isinstance(request, UndecodableRequest):
                        raise InvalidInput(f"the request body is not a valid {request.message_type} message")
                    if to_the_end:
                        return await run_to_the_end(method(self, request, context), to_the_end)
                    return await method(self, request, context)
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except CandorError as exc:
                    code = exc.code.value
                    if exc.rule:
                        metrics.REFUSALS.labels(exc.rule).inc()
                    span.set_status(Status(StatusCode.ERROR, exc.code.value))
                    await context.abort(GRPC_STATUS[exc.code], exc.message)
                except grpc.aio.AbortError:
                    code = _aborted_code(context)
                    raise
                except BUS_TROUBLE as exc:
                    code = "UNAVAILABLE"
                    log.warning("rpc_bus_unavailable", rpc=name, error=str(exc) or type(exc).__name__)
                    span.set_status(Status(StatusCode.ERROR, code))
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        "the message bus did not answer in time (a NATS node may be restarting); try again",
                    )
                except Exception:
                    code = "INTERNAL"
                    log.exception("rpc_failed", rpc=name)
                    span.set_status(Status(StatusCode.ERROR, "INTERNAL"))
                    await context.abort(grpc.StatusCode.INTERNAL, "internal error")
                finally:
                    metrics.GRPC_HANDLED.labels(name, code).inc()
                    metrics.GRPC_SECONDS.labels(name).observe(time.perf_counter() - started)

        return wrapper  # type: ignore[return-value]

    return decorate


def _aborted_code(context: grpc.aio.ServicerContext) -> str:
    """The status a handler aborted with itself."""
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


class UndecodableRequest:
    """What a request that is not a valid protobuf message of its type is decoded to: the method
    then answers INVALID_ARGUMENT in plain words, instead of gRPC's UNKNOWN naming a Python class."""

    def __init__(self, message_type: str) -> None:
        self.message_type = message_type


class RequestDecoding(grpc.aio.ServerInterceptor):
    """Decodes every unary request so that a body which is not its message becomes an
    ``UndecodableRequest`` (answered by ``rpc`` as INVALID_ARGUMENT)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """The method's handler with a deserializer that never raises."""
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        decode = handler.request_deserializer
        # Generated code passes the message class's FromString: its class names the type.
        owner = getattr(decode, "__self__", None)
        message_type = owner.__name__ if isinstance(owner, type) else "request"

        def tolerant(data: bytes) -> Any:
            try:
                return decode(data)
            except Exception:  # noqa: BLE001 - protobuf raises DecodeError and others on bad bytes
                return UndecodableRequest(message_type)

        return grpc.unary_unary_rpc_method_handler(
            handler.unary_unary, request_deserializer=tolerant, response_serializer=handler.response_serializer
        )


def service_token_sha256(token: str) -> str:
    """The digest an internal service keeps of the service token (hex SHA-256). The token is 256
    random bits, so one plain hash is as hard to undo as the token is to guess."""
    return hashlib.sha256(token.encode()).hexdigest()


class ServiceTokenCheck(grpc.aio.ServerInterceptor):
    """Admits a call to the service's API only with ``authorization: Bearer <service token>``,
    knowing the token by its SHA-256 alone; gRPC health stays open for probes."""

    def __init__(self, token_sha256: str) -> None:
        self._expected = token_sha256.encode()
        # The series exists from the start at 0, so the first refusal is an increase Prometheus sees.
        metrics.REFUSALS.labels(SERVICE_TOKEN_RULE)

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metrics.REFUSALS.labels(SERVICE_TOKEN_RULE).inc()
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "this internal API needs the service token")

        self._refusal = grpc.unary_unary_rpc_method_handler(refuse)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Continue to the method when the call is health's or carries the token; refuse otherwise."""
        if details.method.startswith(HEALTH_METHODS):
            return await continuation(details)
        presented = dict(details.invocation_metadata or ()).get("authorization", "")
        if isinstance(presented, str) and presented.startswith("Bearer "):
            digest = service_token_sha256(presented.removeprefix("Bearer "))
            if hmac.compare_digest(digest.encode(), self._expected):
                return await continuation(details)
        return self._refusal


class GrpcServer:
    """An aio gRPC server with the health service; starts NOT_SERVING until marked ready."""

    def __init__(
        self,
        address: str,
        max_message_bytes: int,
        service_names: list[str],
        tls_cert_file: str = "",
        tls_key_file: str = "",
        health_address: str = "",
        service_token_sha256: str = "",
    ) -> None:
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                *KEEPALIVE_SERVER_OPTIONS,
            ],
            interceptors=[
                RequestDecoding(),
                *([ServiceTokenCheck(service_token_sha256)] if service_token_sha256 else []),
            ],
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        # A plaintext listener with nothing but health, for probes that cannot speak TLS (kubelet).
        self._health_address = health_address
        self.health_server: grpc.aio.Server | None = None
        if health_address:
            self.health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
        self.health_port = 0
        self._service_names = ["", *service_names]
        self._address = address
        self._credentials = (
            grpc.ssl_server_credentials([(Path(tls_key_file).read_bytes(), Path(tls_cert_file).read_bytes())])
            if tls_cert_file
            else None
        )
        self.port = 0

    async def start(self) -> int:
        """Bind and start serving; returns the bound port."""
        if self._credentials is not None:
            self.port = self.server.add_secure_port(self._address, self._credentials)
        else:
            self.port = self.server.add_insecure_port(self._address)
        if self.port == 0:
            raise OSError(f"cannot bind gRPC address {self._address}")
        if self.health_server is not None:
            self.health_port = self.health_server.add_insecure_port(self._health_address)
            if self.health_port == 0:
                raise OSError(f"cannot bind health address {self._health_address}")
            await self.health_server.start()
        await self._set(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        return self.port

    async def mark_serving(self) -> None:
        """Report SERVING for the server and each named service."""
        await self._set(health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace_s: float) -> None:
        """Report NOT_SERVING, then stop, letting in-flight calls finish within the grace period."""
        await self._set(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace_s)
        if self.health_server is not None:
            await self.health_server.stop(0)

    async def _set(self, status: int) -> None:
        for name in self._service_names:
            await self.health.set(name, status)

"""The service life cycle every Candor service shares.

``run_service`` is what ``python -m candor_<name>`` calls: load settings, configure logging and
telemetry, then run the service's ``serve`` coroutine until SIGTERM or SIGINT. ``ServiceHost``
holds the collaborators every service has (the NATS bus and the gRPC server) and tears them down
in the right order.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from candor_kit import subjects
from candor_kit.bus import Bus
from candor_kit.cores import one_blas_thread
from candor_kit.errors import CandorError, ConfigError
from candor_kit.grpc_server import GrpcServer
from candor_kit.logging import configure_logging
from candor_kit.metrics import MetricsServer
from candor_kit.settings import CommonSettings
from candor_kit.telemetry import configure_tracing

S = TypeVar("S")
log = structlog.get_logger("candor.host")


class ServiceHost:
    """The bus and the gRPC server of one service, opened and closed together."""

    def __init__(self, settings: CommonSettings, grpc_services: list[str]) -> None:
        self.settings = settings
        self.grpc = GrpcServer(
            settings.grpc_address,
            settings.max_message_bytes,
            grpc_services,
            settings.tls_cert_file,
            settings.tls_key_file,
            settings.health_address,
            settings.service_token_sha256,
        )
        self.bus: Bus | None = None
        self.metrics = MetricsServer(settings.metrics_address) if settings.metrics_address else None

    async def __aenter__(self) -> ServiceHost:
        self.bus = await Bus.connect(
            self.settings.nats_url,
            name=f"candor-{self.settings.service}",
            creds_file=self.settings.nats_creds_file,
            ca_file=self.settings.nats_ca_file,
            user=self.settings.nats_user,
            password_file=self.settings.nats_password_file,
            inbox_prefix=subjects.inbox_prefix(self.settings.service),
        )
        return self

    async def start_grpc(self) -> int:
        """Start the gRPC server (health NOT_SERVING) once servicers are registered."""
        port = await self.grpc.start()
        log.info("grpc_listening", address=self.settings.grpc_address, port=port, health_port=self.grpc.health_port)
        if self.metrics is not None:
            metrics_port = await asyncio.to_thread(self.metrics.start)
            log.info("metrics_listening", address=self.settings.metrics_address, port=metrics_port)
        return port

    async def mark_serving(self) -> None:
        """Report SERVING in gRPC health."""
        await self.grpc.mark_serving()
        log.info("serving")

    async def __aexit__(self, *exc: object) -> None:
        # Stop taking gRPC calls first, then drain NATS so replies to in-flight work still go out.
        await self.grpc.stop(self.settings.shutdown_grace_s)
        if self.bus is not None:
            await self.bus.close()
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.stop)
        log.info("stopped")


def run_service(
    name: str,
    load_settings: Callable[[], S],
    serve: Callable[[S, asyncio.Event], Awaitable[None]],
) -> None:
    """Entry point of ``python -m candor_<name>``; exits 2 on invalid configuration."""
    configure_logging(name)
    one_blas_thread()
    try:
        settings = load_settings()
        configure_tracing(name)
    except ConfigError as exc:
        log.error("config_invalid", error=str(exc))
        sys.exit(2)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    try:
        asyncio.run(main())
    except ConfigError as exc:
        log.error("config_invalid", error=str(exc))
        sys.exit(2)
    except CandorError as exc:  # NATS unreachable at start, say: exit so the supervisor retries
        log.error("startup_failed", error=exc.message)
        sys.exit(1)

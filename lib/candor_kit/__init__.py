"""Candor's shared service kit: settings, logging, telemetry, the NATS bus, gRPC serving, errors."""

from candor_kit.audit_events import AuditPublisher, ensure_audit_stream
from candor_kit.bus import Bus, settle_batch
from candor_kit.errors import (
    CandorError,
    ConfigError,
    DeadlineExceeded,
    ErrorCode,
    InvalidInput,
    NotFound,
    Overloaded,
    PolicyViolation,
    PreconditionFailed,
    ServiceUnavailable,
    TooLarge,
    Unauthenticated,
)
from candor_kit.grpc_server import GRPC_STATUS, GrpcServer, rpc
from candor_kit.host import ServiceHost, run_service
from candor_kit.logging import configure_logging
from candor_kit.settings import CommonSettings, EnvReader
from candor_kit.telemetry import configure_tracing, current_trace_id

__all__ = [
    "GRPC_STATUS",
    "AuditPublisher",
    "Bus",
    "CandorError",
    "CommonSettings",
    "ConfigError",
    "DeadlineExceeded",
    "EnvReader",
    "ErrorCode",
    "GrpcServer",
    "InvalidInput",
    "NotFound",
    "Overloaded",
    "PolicyViolation",
    "PreconditionFailed",
    "ServiceHost",
    "ServiceUnavailable",
    "TooLarge",
    "Unauthenticated",
    "configure_logging",
    "configure_tracing",
    "current_trace_id",
    "ensure_audit_stream",
    "rpc",
    "run_service",
    "settle_batch",
]

"""OpenTelemetry set-up and W3C trace-context propagation across gRPC metadata and NATS headers."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def configure_tracing(service: str) -> TracerProvider:
    """Install a global tracer provider; spans go over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.

    The standard OTEL_* variables (service name, resource attributes, sampler) apply as usual.
    """
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", f"candor-{service}")})
    provider = TracerProvider(resource=resource)
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def inject_headers() -> dict[str, str]:
    """The current context as W3C headers (traceparent, tracestate) for an outgoing message."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> otel_context.Context:
    """The remote parent context carried by incoming headers or gRPC metadata."""
    if headers is None:
        return otel_context.Context()
    carrier = dict(headers)
    return propagate.extract({k.lower(): v for k, v in carrier.items()})


def current_trace_id() -> str:
    """The current trace id as 32 hex digits, or an empty string outside a span."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""

"""OpenTelemetry set-up and W3C trace-context propagation across gRPC metadata and NATS headers."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from candor_kit.errors import ConfigError

#: OTLP transports, by the value of OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL.
OTLP_PROTOCOLS = ("grpc", "http/protobuf")
#: Values of OTEL_TRACES_EXPORTER that Candor honours.
TRACE_EXPORTERS = ("otlp", "none", "console")


def configure_tracing(service: str) -> TracerProvider:
    """Install a global tracer provider that exports as the standard OTEL_* variables say.

    - ``OTEL_TRACES_EXPORTER``: ``otlp``, ``console`` or ``none``. Unset, spans go over OTLP when
      ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, and nowhere
      otherwise (a service with no collector does not retry one on localhost forever).
    - ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` or ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``grpc`` (the
      default) or ``http/protobuf``. The exporters read the endpoint, headers, certificates,
      timeout and compression variables themselves.
    - The service name, resource attributes and sampler variables apply as usual.

    Raises ConfigError for an exporter or protocol it cannot honour (``http/json`` has no Python
    exporter), so a service does not start believing it exports when it does not.
    """
    exporter = tracing_exporter(os.environ)
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", f"candor-{service}")})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def tracing_exporter(env: Mapping[str, str]) -> SpanExporter | None:
    """The span exporter the OTEL_* variables in ``env`` ask for, or None for no export."""
    chosen = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if chosen and chosen not in TRACE_EXPORTERS:
        raise ConfigError(f"OTEL_TRACES_EXPORTER={chosen!r} is not supported; use one of {', '.join(TRACE_EXPORTERS)}")
    endpoint_set = bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    if chosen == "none" or (not chosen and not endpoint_set):
        return None
    if chosen == "console":
        return ConsoleSpanExporter()
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ConfigError(f"OTLP protocol {protocol!r} is not supported; use one of {', '.join(OTLP_PROTOCOLS)}")


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

"""Where a request's time goes, from the trace spans the services export: a small OTLP receiver
the services send their spans to, and the split of each traced call into its parts.

Unlike the containers run's trace sink (``tests/e2e/otlp_sink.py``, which keeps nothing of a span
but its trace and service, by design), this receiver keeps every span's name and times.

The services export spans over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (see
``candor_kit.telemetry``); ``SpanReceiver.environment()`` gives the settings that point a local
stack at the receiver. For each trace whose root is the named gRPC method, ``parts`` splits the
root's time into: each NATS request the root made, as the answering service's own handling (its
``process`` span, less what it published inside it) and the hop around it (NATS, queueing,
protobuf); each publish (JetStream, durable), the answering service's own publishes apart; and
the root's own time beside all of them.
"""

from __future__ import annotations

import statistics
import threading
from collections import defaultdict
from collections.abc import Iterable
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.e2e.otlp_sink import service_name


@dataclass(frozen=True)
class Span:
    """One finished span, as exported."""

    service: str
    name: str
    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    start_ns: int
    end_ns: int

    @property
    def ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class SpanReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver on a loopback port, keeping every span it is sent."""

    def __init__(self) -> None:
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    def __enter__(self) -> SpanReceiver:
        self._server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.stop(grace=1)

    def environment(self) -> dict[str, str]:
        """The settings that make a service export its spans here, in batches as in production."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}", "OTEL_EXPORTER_OTLP_INSECURE": "true"}

    def Export(  # noqa: N802 (the OTLP service's method name)
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            service = service_name(resource_spans)
            for scope in resource_spans.scope_spans:
                received += [
                    Span(
                        service,
                        span.name,
                        span.trace_id,
                        span.span_id,
                        span.parent_span_id,
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                    )
                    for span in scope.spans
                ]
        with self._lock:
            self._spans += received
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[Span]:
        """Every span received so far."""
        with self._lock:
            return list(self._spans)


def short_subject(span_name: str) -> str:
    """A NATS span's subject without its model or per-call tail: ``candor.detect.<model> request``
    is ``detect``; a span of another kind keeps its name."""
    subject, _, _ = span_name.rpartition(" ")
    words = subject.split(".")
    return words[1] if len(words) > 1 and words[0] == "candor" else subject or span_name


def covered_ms(spans: Iterable[Span]) -> float:
    """Milliseconds covered by at least one of ``spans`` (calls made side by side count once)."""
    total, end = 0, 0
    for span in sorted(spans, key=lambda s: s.start_ns):
        start = max(span.start_ns, end)
        if span.end_ns > start:
            total += span.end_ns - start
            end = span.end_ns
    return total / 1e6


def trace_parts(spans: list[Span], root_name: str) -> list[dict[str, float]]:
    """For each trace rooted at a span named ``root_name``, oldest first: milliseconds by part (see
    the module)."""
    children: dict[bytes, list[Span]] = defaultdict(list)
    for span in spans:
        children[span.parent_id].append(span)
    found = []
    for root in sorted((s for s in spans if s.name == root_name), key=lambda s: s.start_ns):
        parts: dict[str, float] = defaultdict(float)
        direct = children[root.span_id]
        for call in direct:
            part = short_subject(call.name)
            if call.name.endswith(" request"):
                served = [s for s in children[call.span_id] if s.name.endswith(" process")]
                if served:
                    handling = served[0]
                    own_publishes = [s for s in children[handling.span_id] if s.name.endswith(" publish")]
                    published = sum(s.ms for s in own_publishes)
                    parts[f"{part} (service)"] += handling.ms - published
                    if own_publishes:
                        parts[f"{part} (its publish)"] += published
                    parts[f"{part} (hop)"] += call.ms - handling.ms
                    continue
            parts[part] += call.ms
        parts["gateway, beside them"] = root.ms - covered_ms(direct)
        parts["total"] = root.ms
        found.append(dict(parts))
    return found


def median_parts(traces: list[dict[str, float]]) -> list[tuple[str, float]]:
    """The median of each part over ``traces`` (a part a trace lacks counts as 0), in the order
    parts first appear; ``total`` last."""
    names: dict[str, None] = {}
    for parts in traces:
        names.update(dict.fromkeys(parts))
    names.pop("total", None)
    ordered = [*names, "total"]
    return [(name, statistics.median(parts.get(name, 0.0) for parts in traces)) for name in ordered]

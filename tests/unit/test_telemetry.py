"""Telemetry: OTLP export when configured, and trace ids in the JSON logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from candor_cli.stack import free_port

EMIT = """
from opentelemetry import trace
from candor_kit import configure_logging, configure_tracing
import structlog
configure_logging("probe")
provider = configure_tracing("probe")
with trace.get_tracer("probe").start_as_current_span("probe-span"):
    structlog.get_logger().info("inside_span")
provider.force_flush(10_000)
provider.shutdown()
"""


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.span_names: list[str] = []
        self.resources: list[str] = []
        self.received = threading.Event()

    def Export(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    self.resources.append(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                self.span_names.extend(span.name for span in scope_spans.spans)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_go_over_otlp_when_the_endpoint_is_set_and_logs_carry_the_trace_id() -> None:
    receiver = OtlpReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }
        result = subprocess.run([sys.executable, "-c", EMIT], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert receiver.received.wait(10)
    finally:
        server.stop(0)
    assert "probe-span" in receiver.span_names
    assert "candor-probe" in receiver.resources
    line = json.loads(next(text for text in result.stderr.splitlines() if "inside_span" in text))
    assert len(line["trace_id"]) == 32 and int(line["trace_id"], 16) != 0
    assert line["service"] == "probe"

"""Telemetry: OTLP export when configured, and trace ids in the JSON logs."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from candor_cli.processes import free_port
from candor_kit.errors import ConfigError
from candor_kit.telemetry import tracing_exporter
from tests.conftest import INTERNAL

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


class OtlpHttpReceiver(http.server.BaseHTTPRequestHandler):
    """A real OTLP/HTTP trace receiver (POST /v1/traces, protobuf body) that keeps what it is sent."""

    receiver = OtlpReceiver()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
        self.receiver.Export(trace_service_pb2.ExportTraceServiceRequest.FromString(body), None)
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        """Quiet: the test reads what was received, not the access log."""


@contextlib.contextmanager
def otlp_receiver(protocol: str) -> Iterator[tuple[OtlpReceiver, str]]:
    """A running OTLP receiver for ``protocol`` and the endpoint to send to."""
    port = free_port()
    if protocol == "grpc":
        receiver = OtlpReceiver()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        try:
            yield receiver, f"http://127.0.0.1:{port}"
        finally:
            server.stop(0)
        return
    OtlpHttpReceiver.receiver = OtlpReceiver()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), OtlpHttpReceiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield OtlpHttpReceiver.receiver, f"http://127.0.0.1:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_go_over_otlp_in_the_chosen_protocol_and_logs_carry_the_trace_id(protocol: str) -> None:
    with otlp_receiver(protocol) as (receiver, endpoint):
        env = {
            **os.environ,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        }
        result = subprocess.run([sys.executable, "-c", EMIT], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert receiver.received.wait(10)
    assert "probe-span" in receiver.span_names
    assert "candor-probe" in receiver.resources
    line = json.loads(next(text for text in result.stderr.splitlines() if "inside_span" in text))
    assert len(line["trace_id"]) == 32 and int(line["trace_id"], 16) != 0
    assert line["service"] == "probe"


def test_the_traces_protocol_variable_wins_over_the_general_one() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }
    assert isinstance(tracing_exporter(env), HttpExporter)
    assert tracing_exporter({}) is None
    assert tracing_exporter({**env, "OTEL_TRACES_EXPORTER": "none"}) is None


@pytest.mark.parametrize(
    ("variable", "value"), [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"), ("OTEL_TRACES_EXPORTER", "zipkin")]
)
def test_a_service_refuses_to_start_on_an_export_it_cannot_honour(variable: str, value: str) -> None:
    env = {
        **os.environ,
        "CANDOR_NATS_URL": "nats://127.0.0.1:1",
        **INTERNAL,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        variable: value,
    }
    result = subprocess.run(
        [sys.executable, "-m", "candor_embedder"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    refused = json.loads(result.stderr.strip().splitlines()[-1])
    assert refused["event"] == "config_invalid" and value in refused["error"]
    with pytest.raises(ConfigError):
        tracing_exporter({variable: value, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})

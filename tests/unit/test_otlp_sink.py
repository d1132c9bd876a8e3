"""The stand-in trace sink of the container run: real OTLP exports from two services in one trace
reach it, and its log says the trace crossed both."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from candor_cli.processes import free_port
from tests.e2e.otlp_sink import TraceSink, traces_in_log


@pytest.fixture
def sink_address() -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceSink(max_traces=2), server)
    server.add_insecure_port(address)
    server.start()
    yield address
    server.stop(grace=None)


def provider(service: str, address: str) -> TracerProvider:
    """A tracer provider for ``service`` that exports each span at once over OTLP/gRPC."""
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"http://{address}", insecure=True)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider


def test_a_trace_crossing_two_services_is_reported_with_both(
    sink_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, detector = provider("candor-gateway", sink_address), provider("candor-detector", sink_address)
    with gateway.get_tracer("t").start_as_current_span("Search") as parent:
        with detector.get_tracer("t").start_as_current_span("Detect", context=trace.set_span_in_context(parent)):
            pass
    with detector.get_tracer("t").start_as_current_span("Unrelated"):
        pass
    gateway.shutdown()
    detector.shutdown()

    log = "detector-1  | not json\n" + "".join(
        f"otel-collector-1  | {line}\n" for line in capsys.readouterr().out.splitlines()
    )
    traces = traces_in_log(log)
    assert sorted(map(sorted, traces)) == [["candor-detector"], ["candor-detector", "candor-gateway"]]
    assert f"{parent.get_span_context().trace_id:032x}" in log
    assert "Search" not in log and "Detect" not in log, "the sink prints trace ids and services, not span contents"

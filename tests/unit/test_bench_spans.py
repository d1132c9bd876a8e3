"""The pipeline bench's breakdown from trace spans: spans exported over real OTLP/gRPC to the
bench's receiver, split into each call's service, hop and publishes, and the root's own time."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from spans import SpanReceiver, covered_ms, median_parts, trace_parts

ROOT_SPAN = "candor.gateway.v1.GatewayService/Search"


def test_a_search_trace_is_split_into_each_calls_service_hop_and_publish_and_the_gateways_own_time() -> None:
    with SpanReceiver() as receiver:
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{receiver.port}", insecure=True)
        provider = TracerProvider(resource=Resource.create({"service.name": "candor-gateway"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span(ROOT_SPAN):
            time.sleep(0.01)  # the gateway's own checks
            with tracer.start_as_current_span("candor.detect.sface request"):
                time.sleep(0.005)  # the hop out
                with tracer.start_as_current_span("candor.detect.sface process"):
                    time.sleep(0.03)
            with tracer.start_as_current_span("candor.match.search request"):
                with tracer.start_as_current_span("candor.match.search process"):
                    time.sleep(0.01)
                    with tracer.start_as_current_span("candor.audit.search publish"):
                        time.sleep(0.02)
        provider.shutdown()
        found = trace_parts(receiver.spans(), ROOT_SPAN)
    assert len(found) == 1
    parts = found[0]
    # Each part holds at least what was slept in it (a loaded machine only adds).
    assert parts["detect (service)"] >= 30 and parts["detect (hop)"] >= 5
    assert parts["match (service)"] >= 10 and parts["match (its publish)"] >= 20
    assert parts["gateway, beside them"] >= 10
    assert parts["match (its publish)"] < parts["total"] - parts["detect (service)"]
    assert abs(sum(v for k, v in parts.items() if k != "total") - parts["total"]) < 0.01
    assert [name for name, _ in median_parts(found)][-1] == "total"


def test_calls_made_side_by_side_count_once_in_the_time_they_cover() -> None:
    from spans import Span

    def span(start_ms: int, end_ms: int) -> Span:
        return Span("s", "x", b"t", b"s", b"p", start_ms * 1_000_000, end_ms * 1_000_000)

    assert covered_ms([span(0, 10), span(5, 20), span(30, 40)]) == 30

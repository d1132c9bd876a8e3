"""One search is one trace: gateway → detector → embedder → matcher → audit, across NATS hops."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_kit import subjects
from candor_kit.wheel_packs import SFACE_MODEL_ID
from tests.integration.conftest import as_user
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")

SEARCH = "candor.gateway.v1.GatewayService/Search"
#: Once the gallery has a model, searches go to that model's detectors and embedders.
DETECT = subjects.detect_for(SFACE_MODEL_ID)
EMBED = subjects.embed_for(SFACE_MODEL_ID)
EXPECTED_EDGES = {
    (SEARCH, f"{DETECT} request"),
    (f"{DETECT} request", f"{DETECT} process"),
    (SEARCH, f"{EMBED} request"),
    (f"{EMBED} request", f"{EMBED} process"),
    (SEARCH, "candor.matcher.v1.search request"),
    ("candor.matcher.v1.search request", "candor.matcher.v1.search process"),
    (SEARCH, "candor.audit.v1.event.gateway.search.completed publish"),
    (
        "candor.audit.v1.event.gateway.search.completed publish",
        "candor.audit.v1.event.gateway.search.completed process",
    ),
}


def edges(spans: list[ReadableSpan]) -> set[tuple[str, str]]:
    by_id = {span.context.span_id: span for span in spans}
    return {
        (by_id[span.parent.span_id].name, span.name)
        for span in spans
        if span.parent is not None and span.parent.span_id in by_id
    }


async def test_search_spans_form_one_trace_with_the_expected_edges(
    gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, span_exporter: InMemorySpanExporter
) -> None:
    enrol = gateway_pb2.EnrollRequest(image=(samples / "obama.jpg").read_bytes(), subject_id="obama")
    await gateway.Enroll(enrol, metadata=as_user("enroller-token"))  # the gallery has a model from here on
    found = await gateway.Search(
        gateway_pb2.SearchRequest(
            probe_image=(samples / "obama2.jpg").read_bytes(), case_number="CASE-TRACE", purpose="investigation"
        ),
        metadata=as_user("investigator-token"),
    )
    trace_id = int(found.trace_id, 16)

    def spans() -> list[ReadableSpan]:
        return [s for s in span_exporter.get_finished_spans() if s.context.trace_id == trace_id]

    async def complete() -> bool:
        return EXPECTED_EDGES <= edges(spans())

    await eventually(complete)
    roots = [s for s in spans() if s.parent is None]
    assert [s.name for s in roots] == [SEARCH]

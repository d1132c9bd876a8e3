"""Prometheus metrics, scraped over HTTP from the gateway's /metrics while real searches run.

The in-process stack's services share one registry, so the gateway's listener also shows the
detector's, matcher's and audit service's metrics; a deployment has one listener per service.
"""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_kit import subjects
from tests.integration.conftest import TOKENS, InProcessStack, as_user
from tests.integration.test_governance import fresh_investigator, probe_request
from tests.waiting import eventually

SEARCH = "candor.gateway.v1.GatewayService/Search"


async def scrape(stack: InProcessStack) -> str:
    """The text of one scrape of /metrics."""

    def get() -> str:
        with urllib.request.urlopen(f"http://{stack.metrics_address}/metrics", timeout=10) as response:
            assert response.status == 200
            return response.read().decode()

    return await asyncio.to_thread(get)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a scrape (0 when it has not been recorded yet)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return found.value
    return 0.0


async def test_searches_are_counted_by_method_status_and_rule_with_their_latency(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    _, metadata = fresh_investigator()
    before = await scrape(stack)
    await gateway.Search(probe_request(samples, "MET-1/2026"), metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.Search(probe_request(samples, "MET-1/2026", purpose="curiosity"), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    after = await scrape(stack)

    def grew(name: str, by: float, **labels: str) -> bool:
        return sample(after, name, **labels) - sample(before, name, **labels) == by

    assert grew("candor_grpc_server_handled_total", 1, grpc_method=SEARCH, grpc_code="OK")
    assert grew("candor_grpc_server_handled_total", 1, grpc_method=SEARCH, grpc_code="PERMISSION_DENIED")
    assert grew("candor_refusals_total", 1, rule="purpose")
    assert grew("candor_grpc_server_handling_seconds_count", 2, grpc_method=SEARCH)
    assert grew("candor_grpc_server_handling_seconds_bucket", 2, grpc_method=SEARCH, le="+Inf")
    # The search went through the detector, embedder and matcher over NATS request/reply.
    assert grew("candor_nats_requests_handled_total", 1, subject=subjects.MATCH_SEARCH, code="OK")


async def test_audit_appends_are_timed(stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub) -> None:
    before = sample(await scrape(stack), "candor_audit_append_seconds_count")
    with pytest.raises(grpc.aio.AioRpcError):
        await gateway.VerifyAudit(gateway_pb2.VerifyAuditRequest(), metadata=())

    async def appended() -> bool:
        return sample(await scrape(stack), "candor_audit_append_seconds_count") > before

    await eventually(appended)


async def test_a_scrape_names_no_user_case_or_token(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    user, metadata = fresh_investigator()
    await gateway.Search(probe_request(samples, "MET-SECRET-CASE"), metadata=metadata)
    text = await scrape(stack)
    assert "MET-SECRET-CASE" not in text
    assert user not in text
    assert not any(token in text for token in TOKENS.values())
    assert metadata[0][1].removeprefix("Bearer ") not in text


async def test_the_audit_backlog_and_the_gallery_size_are_gauged(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    enrol = gateway_pb2.EnrollRequest(image=(samples / "obama.jpg").read_bytes(), subject_id="obama")
    await gateway.Enroll(enrol, metadata=as_user("enroller-token"))  # idempotent: other modules enrol it too

    def gauges(text: str) -> tuple[bool, bool]:
        names = {
            (s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(text) for s in f.samples
        }
        backlog = ("candor_jetstream_consumer_pending", (("consumer", subjects.AUDIT_CONSUMER),)) in names
        gallery = any(name == "candor_gallery_records" for name, _ in names)
        return backlog, gallery

    async def both() -> bool:
        return gauges(await scrape(stack)) == (True, True)

    await eventually(both, timeout_s=40)
    text = await scrape(stack)
    assert sample(text, "candor_gallery_records") > 0
    assert sample(text, "candor_jetstream_consumer_pending", consumer=subjects.AUDIT_CONSUMER) >= 0

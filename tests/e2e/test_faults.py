"""A part of the pipeline that stops answering, through real processes: the gateway's search fails
UNAVAILABLE (a retryable status that says what to do), never DEADLINE_EXCEEDED or INTERNAL, and
searches succeed again as soon as the part is back. make test-scale does the same to the whole
production shape in containers (scripts/test_scale.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import grpc
import httpx
import pytest
from nats.js.api import ObjectMeta
from nats.js.object_store import ObjectStore
from prometheus_client.parser import text_string_to_metric_families

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_cli import LocalStack
from candor_cli.processes import alive
from candor_cli.stack import metrics_key
from candor_client import GatewayClient
from candor_client.channel import open_channel
from candor_gateway.photos import PhotoHeader
from candor_kit import subjects
from candor_kit.identifiers import record_id_for
from tests.e2e.nats_login import connect_as
from tests.e2e.test_prometheus import eventually
from tests.objects import object_stored

pytestmark = pytest.mark.e2e

#: The gateway's wait for each internal request, short so the test does not wait 30 s.
REQUEST_TIMEOUT_S = 4
#: When the gateway asks a detector or embedder again (another replica, if there is one).
HEDGE_AFTER_S = 2.0
#: When the replica holding requests is killed: before the gateway asks again.
KILL_AFTER_S = 1.0
#: How often the gateway sweeps retained probes and open imports (hourly in production).
SWEEP_S = 2
T = TypeVar("T")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Iterator[LocalStack]:
    stack = LocalStack(
        tmp_path_factory.mktemp("faults"),
        extra_env={
            "CANDOR_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
            "CANDOR_GATEWAY_HEDGE_AFTER_S": str(HEDGE_AFTER_S),
            "CANDOR_GATEWAY_RETENTION_SWEEP_S": str(SWEEP_S),
        },
    )
    state = stack.up()
    with GatewayClient(state.gateway, stack.token()) as client:
        client.enroll(samples / "obama.jpg", "obama")
    yield stack
    stack.down()


@pytest.mark.parametrize("part", ["detector", "embedder", "matcher"])
def test_a_search_while_a_part_is_paused_fails_unavailable_and_succeeds_once_it_is_back(
    stack: LocalStack, samples: Path, part: str
) -> None:
    state = stack.state()
    assert state is not None
    pid = state.pids[part]
    token = (("authorization", f"Bearer {stack.token()}"),)
    # A channel without gRPC's retries: the test sees the gateway's answer to one attempt.
    with open_channel(state.gateway, retries=False) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        os.kill(pid, signal.SIGSTOP)
        try:
            began = time.monotonic()
            with pytest.raises(grpc.RpcError) as refused:
                stub.Search(search_request(samples), metadata=token, timeout=60)
            waited = time.monotonic() - began
        finally:
            os.kill(pid, signal.SIGCONT)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
    assert part in refused.value.details() and "try again" in refused.value.details()
    assert waited < 2 * REQUEST_TIMEOUT_S
    with GatewayClient(state.gateway, stack.token()) as client:
        found = client.search(
            samples / "obama2.jpg", case_number=f"F-{part}", purpose="investigation", authorisation="W-FAULTS"
        )
        assert found.candidates[0].subject_id == "obama"


@pytest.mark.parametrize("part", ["detector", "embedder"])
def test_searches_whose_request_died_with_a_replica_are_answered_by_the_other_before_the_timeout(
    stack: LocalStack, samples: Path, part: str
) -> None:
    # A queue group gives each request to one replica at random. Requests a replica held when it
    # was killed are lost: the gateway asks again after HEDGE_AFTER_S, and the other replica
    # answers, rather than the search waiting out the request timeout and failing UNAVAILABLE.
    # The replica is paused first so that some of eight searches at once are surely in its hands.
    replica = stack.add_replica(part)
    state = stack.state()
    assert state is not None
    token = (("authorization", f"Bearer {stack.token()}"),)
    os.kill(state.pids[replica], signal.SIGSTOP)
    try:
        with open_channel(state.gateway, retries=False) as channel, ThreadPoolExecutor(8) as pool:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)

            def search() -> tuple[float, str]:
                began = time.monotonic()
                found = stub.Search(search_request(samples), metadata=token, timeout=60)
                return time.monotonic() - began, found.candidates[0].subject_id

            searches = [pool.submit(search) for _ in range(8)]
            time.sleep(KILL_AFTER_S)
            os.kill(state.pids[replica], signal.SIGKILL)
            answers = [future.result() for future in searches]
    finally:
        stack.stop_service(replica)
    assert [subject for _, subject in answers] == ["obama"] * 8
    assert max(waited for waited, _ in answers) < REQUEST_TIMEOUT_S


def test_an_enrolment_the_matcher_answers_too_late_never_leaves_its_record_without_its_photo(
    stack: LocalStack, samples: Path
) -> None:
    """The matcher paused past the gateway's wait: the enrolment is refused UNAVAILABLE, but the
    request is in the matcher's hands and it enrols the face once it runs again. The photo must
    still be stored: never a gallery record a reviewer is shown without its photo. And the
    caller's retry finds the enrolment done, its photo there."""
    state = stack.state()
    assert state is not None
    image = (samples / "biden.jpg").read_bytes()
    subject = f"paused-enrol-{uuid.uuid4().hex[:8]}"
    record_id = record_id_for(subject, hashlib.sha256(image).hexdigest())
    token = (("authorization", f"Bearer {stack.token()}"),)
    request = gateway_pb2.EnrollRequest(image=image, subject_id=subject)
    with open_channel(state.gateway, retries=False) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        os.kill(state.pids["matcher"], signal.SIGSTOP)
        try:
            with pytest.raises(grpc.RpcError) as refused:
                stub.Enroll(request, metadata=token, timeout=60)
        finally:
            os.kill(state.pids["matcher"], signal.SIGCONT)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        with GatewayClient(state.gateway, stack.token()) as client:
            eventually(
                lambda: subject in _subjects_found(client, samples / "biden.jpg"),
                "the resumed matcher enrolling the face it was sent",
                timeout_s=30,
            )
        assert _on_photo_store(stack, lambda store: object_stored(store, f"gallery/{record_id}")), (
            "the matcher enrolled the face, but the gateway had taken its photo back"
        )
        again = stub.Enroll(request, metadata=token, timeout=60)
    assert again.record_id == record_id and not again.created
    assert _on_photo_store(stack, lambda store: object_stored(store, f"gallery/{record_id}"))


def _subjects_found(client: GatewayClient, probe: Path) -> set[str]:
    found = client.search(probe, case_number="F-ENROL", purpose="investigation", authorisation="W-FAULTS")
    return {candidate.subject_id for candidate in found.candidates}


def search_request(samples: Path) -> gateway_pb2.SearchRequest:
    return gateway_pb2.SearchRequest(
        probe_image=(samples / "obama2.jpg").read_bytes(),
        case_number="F-PAUSED",
        purpose="investigation",
        authorisation_reference="W-FAULTS",
        client_request_id=os.urandom(8).hex(),
    )


def test_a_stored_probe_the_sweep_cannot_use_leaves_the_gateway_serving_and_the_others_swept(
    stack: LocalStack, samples: Path
) -> None:
    # A probe whose header says when it was stored without saying in which time zone (written by
    # hand, a restore, an older tool) must not end the gateway at its next sweep, nor stop the
    # sweep deleting the probes whose retention has ended.
    unusable, due = str(uuid.uuid4()), str(uuid.uuid4())
    long_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=3650)).isoformat()
    _put_probe_object(stack, unusable, stored_at="2020-01-01T00:00:00")
    # Past the policy's days, and its search never reached the chain: the sweep deletes it.
    _put_probe_object(stack, due, stored_at=long_ago)
    state = stack.state()
    assert state is not None
    metrics = state.addresses[metrics_key("gateway")]

    def swept() -> bool:
        assert alive(state.pids["gateway"]), "the gateway ended at the sweep: " + _log_tail(stack, "gateway")
        return not _probe_stored(stack, due)

    eventually(swept, "the sweep deleting the probe whose retention has ended", timeout_s=10 * SWEEP_S + 20)
    log = (stack.logs / "gateway.log").read_text(errors="replace")
    assert "photo_header_unreadable" in log and f"probe/{unusable}" in log and "names no time zone" in log
    # Not hidden either: from the round that met it on, the probes sweep has no clean round (its
    # alert's series) while the imports sweep goes on having them. (Read from that round on: a
    # round that began before the object was stored may well have ended clean after it.)
    seen = _last_clean_rounds(metrics)["probes"]
    mark = time.time()
    for _ in range(2):  # two imports rounds: a whole probes round ran between them
        eventually(
            lambda since=mark: _last_clean_rounds(metrics)["imports"] > since,
            "a clean round of the imports sweep after the probes sweep met the object",
            timeout_s=10 * SWEEP_S + 20,
        )
        mark = _last_clean_rounds(metrics)["imports"]
    assert _last_clean_rounds(metrics)["probes"] == seen, "the probes sweep had a clean round with the object there"
    # Once an operator has removed the object, the next round is clean again.
    _on_photo_store(stack, lambda store: store.delete(f"probe/{unusable}"))
    removed_at = time.time()
    eventually(
        lambda: _last_clean_rounds(metrics)["probes"] > removed_at,
        "a clean round of the probes sweep after the object went",
        timeout_s=10 * SWEEP_S + 20,
    )
    with GatewayClient(state.gateway, stack.token()) as client:
        found = client.search(
            samples / "obama2.jpg", case_number="F-SWEEP", purpose="investigation", authorisation="W-FAULTS"
        )
    assert found.candidates[0].subject_id == "obama"


def _on_photo_store(stack: LocalStack, act: Callable[[ObjectStore], Awaitable[T]]) -> T:
    """``act`` on the stack's photo store, logged in as the gateway's NATS user."""

    async def run() -> T:
        client = await connect_as(stack, "gateway")
        try:
            return await act(await client.jetstream().object_store(subjects.PHOTOS_BUCKET))
        finally:
            await client.close()

    return asyncio.run(run())


def _put_probe_object(stack: LocalStack, search_id: str, stored_at: str) -> None:
    """Store an object under a probe's name with the header the gateway writes, but for
    ``stored_at`` (the sweep does not read its body)."""
    header = PhotoHeader("probe", search_id, "0" * 64, stored_at=stored_at, origin="search")
    meta = ObjectMeta(name=header.name, description=header.encoded())
    _on_photo_store(stack, lambda store: store.put(header.name, os.urandom(64), meta=meta))


def _probe_stored(stack: LocalStack, search_id: str) -> bool:
    return _on_photo_store(stack, lambda store: object_stored(store, f"probe/{search_id}"))


def _last_clean_rounds(metrics_address: str) -> dict[str, float]:
    """When each of the gateway's sweeps last ran clean, from its /metrics."""
    text = httpx.get(f"http://{metrics_address}/metrics", timeout=10).text
    families = text_string_to_metric_families(text)
    gauge = next(f for f in families if f.name == "candor_gateway_sweep_last_clean_timestamp_seconds")
    return {sample.labels["sweep"]: sample.value for sample in gauge.samples}


def _log_tail(stack: LocalStack, name: str) -> str:
    return (stack.logs / f"{name}.log").read_text(errors="replace")[-3000:]

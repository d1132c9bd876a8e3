"""JetStream's announcements of spent import work, kept in a stream and settled by the gateway, on a
real nats-server. The announcements are published here as the server would publish them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.js.errors import NotFoundError
from prometheus_client import REGISTRY

from candor.ingest.v1 import ingest_pb2
from candor_cli.processes import free_port, start_nats_server
from candor_kit import Bus
from candor_kit.audit_events import AuditPublisher, ensure_audit_stream
from candor_kit.ingest import dead_letter_exhausted, ensure_advisories_stream, ensure_ingest_streams, result_subject
from candor_kit.subjects import (
    INGEST_ADVISORIES_STREAM,
    INGEST_DEAD_STREAM,
    INGEST_RESULTS_STREAM,
    INGEST_WORK_PREFIX,
    MAX_DELIVERIES_ADVISORY,
    ingest_stream,
)
from tests.waiting import eventually

MATCH_STREAM = ingest_stream("match")
ANNOUNCED = f"{MAX_DELIVERIES_ADVISORY}.{MATCH_STREAM}.ingest-match"


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[str]:
    """A nats-server of the test's own: on the session's, a worker some earlier test left running
    could take the work items these tests queue."""
    port = free_port()
    process = start_nats_server(tmp_path, port)
    yield f"nats://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


@pytest.fixture
async def gateway(own_nats: str) -> AsyncIterator[Bus]:
    """The gateway's connection, settling announcements until the test ends."""
    bus = Bus(await nats.connect(own_nats), secret=b"the gateway's password")
    await ensure_ingest_streams(bus)
    await ensure_audit_stream(bus)
    await ensure_advisories_stream(bus)
    stop = asyncio.Event()
    watching = asyncio.create_task(dead_letter_exhausted(bus, AuditPublisher(bus, "gateway"), 1, stop))
    try:
        yield bus
    finally:
        stop.set()
        await watching
        await bus.close()


async def nothing_kept(bus: Bus) -> bool:
    """Whether every announcement stored so far is settled."""
    return (await bus.jetstream.stream_info(INGEST_ADVISORIES_STREAM)).state.messages == 0


async def taken_out(bus: Bus, sequence: int) -> bool:
    """Whether the match queue's item at ``sequence`` is gone."""
    try:
        await bus.jetstream.get_msg(MATCH_STREAM, sequence)
    except NotFoundError:
        return True
    return False


async def test_an_announced_item_is_dead_lettered_failed_and_taken_out_of_its_queue_once(gateway: Bus) -> None:
    item = ingest_pb2.ItemRef(import_id="announced-1", item=4, subject_id="S-4")
    work = ingest_pb2.MatchWork(item=item).SerializeToString()
    sequence = (await gateway.jetstream.publish(f"{INGEST_WORK_PREFIX}.match", work)).seq
    dead_before = (await gateway.jetstream.stream_info(INGEST_DEAD_STREAM)).state.messages
    announcement = json.dumps(
        {"consumer": "ingest-match", "stream": MATCH_STREAM, "stream_seq": sequence, "deliveries": 5}
    ).encode()
    # Twice, as after a redelivery: the second finds the item settled and does nothing.
    for _ in range(2):
        await gateway.client.publish(ANNOUNCED, announcement)

    await eventually(lambda: taken_out(gateway, sequence), what="the announced item taken out of its queue")
    await eventually(lambda: nothing_kept(gateway), what="both announcements settled")
    assert (await gateway.jetstream.stream_info(INGEST_DEAD_STREAM)).state.messages == dead_before + 1
    stored = await gateway.jetstream.get_last_msg(INGEST_RESULTS_STREAM, result_subject("announced-1", 4, "gateway"))
    result = ingest_pb2.ItemResult.FromString(stored.data or b"")
    assert result.outcome == ingest_pb2.OUTCOME_FAILED and "no worker settled it in 5 deliveries" in result.detail


async def test_an_announcement_naming_no_import_work_is_logged_and_does_not_stop_the_others(
    gateway: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    await gateway.client.publish(ANNOUNCED, b"{not json")
    await gateway.client.publish(ANNOUNCED, json.dumps({"consumer": "someone-else", "stream_seq": 1}).encode())
    item = ingest_pb2.ItemRef(import_id="announced-2", item=0, subject_id="S-0")
    sequence = (
        await gateway.jetstream.publish(
            f"{INGEST_WORK_PREFIX}.match", ingest_pb2.MatchWork(item=item).SerializeToString()
        )
    ).seq
    await gateway.client.publish(
        ANNOUNCED, json.dumps({"consumer": "ingest-match", "stream_seq": sequence, "deliveries": 5}).encode()
    )

    # Announcements are settled in order: by the time the last one's item is gone, the unreadable
    # ones before it were read.
    await eventually(lambda: taken_out(gateway, sequence), what="the readable announcement's item taken out")
    await eventually(lambda: nothing_kept(gateway), what="the unreadable ones settled too, not tried for ever")
    printed = capsys.readouterr()
    assert (printed.out + printed.err).count("import_advisory_unreadable") == 2


def unsettled(why: str) -> float:
    """The gateway's count of announcements it could not settle, for ``why``."""
    return REGISTRY.get_sample_value("candor_import_advisories_unsettled_total", {"why": why}) or 0.0


async def test_an_announcement_the_gateway_cannot_settle_is_counted_for_its_alert_and_kept_until_it_can(
    gateway: Bus,
) -> None:
    """With the dead-letter stream gone (a bad redeploy, say), an announced item cannot be settled:
    its import can never finish, and a log line alone tells no one. Each failed try is counted (the
    CandorImportWorkUnsettled alert reads it), the announcement is kept, and once the stream is
    back it is settled; an unreadable one is counted apart (it never settles)."""
    failed_before, unreadable_before = unsettled("failed"), unsettled("unreadable")
    dead = await gateway.jetstream.stream_info(INGEST_DEAD_STREAM)
    await gateway.jetstream.delete_stream(INGEST_DEAD_STREAM)
    item = ingest_pb2.ItemRef(import_id="announced-3", item=1, subject_id="S-1")
    work = ingest_pb2.MatchWork(item=item).SerializeToString()
    sequence = (await gateway.jetstream.publish(f"{INGEST_WORK_PREFIX}.match", work)).seq
    await gateway.client.publish(
        ANNOUNCED, json.dumps({"consumer": "ingest-match", "stream_seq": sequence, "deliveries": 5}).encode()
    )
    await gateway.client.publish(ANNOUNCED, b"{not json")

    async def counted() -> bool:
        return unsettled("failed") > failed_before and unsettled("unreadable") == unreadable_before + 1

    await eventually(counted, what="the failed settle and the unreadable announcement counted")
    assert not await taken_out(gateway, sequence)
    assert not await nothing_kept(gateway), "the announcement that failed to settle was dropped"
    await gateway.jetstream.add_stream(dead.config)
    await eventually(
        lambda: taken_out(gateway, sequence), timeout_s=30, what="the item settled once the stream is back"
    )
    await eventually(lambda: nothing_kept(gateway), what="the announcement settled")

"""The event feed, made from a real audit chain (SQLite) onto a real nats-server: what each kind
says, in chain order, resumed from the stream after a restart, stored once when two audit
replicas publish the same records, and followed by a durable consumer that resumes and replays."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from candor.events.v1 import events_pb2
from candor.gateway.v1 import gateway_pb2
from candor_audit import AuditChain
from candor_audit.feed import EventFeed, lifecycle_event, run_feed
from candor_cli.processes import free_port, start_nats_server
from candor_client import EventFollower, consumer_config
from candor_kit.audit_records import AuditEntry, StoredRecord
from candor_kit.audit_signing import Signer
from candor_kit.subjects import EVENTS_STREAM

ASYNC = pytest.mark.asyncio(loop_scope="session")
SIGNER = Signer(Ed25519PrivateKey.generate())


def entry(kind: str, event_id: str = "", case: str = "", **details: object) -> AuditEntry:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return AuditEntry(
        event_id=event_id or str(uuid.uuid4()),
        kind=kind,
        occurred_at=now,
        actor="rob",
        case_number=case,
        purpose="investigation" if case else "",
        trace_id="",
        details_json=json.dumps(details),
    )


def stored(item: AuditEntry, sequence: int = 7) -> StoredRecord:
    return StoredRecord(sequence, item, item.occurred_at, "0" * 64, "1" * 64)


def test_each_kind_carries_its_ids_and_status_and_nothing_else() -> None:
    search = lifecycle_event(
        stored(
            entry(
                "search.completed",
                "s-1",
                "C-1",
                probe_sha256="ab" * 32,
                candidates=[{"rank": 1, "subject_id": "x", "distance": 0.3, "record_id": "r"}],
            )
        )
    )
    assert (search.search_id, search.candidates, search.case_number, search.record_sequence) == ("s-1", 1, "C-1", 7)
    # Neither the probe's hash nor an undecided candidate's id nor a distance goes on the feed.
    assert b"ab" * 32 not in search.SerializeToString() and b'"x"' not in search.SerializeToString()
    assert search.subject_id == ""

    lead = lifecycle_event(
        stored(entry("review.confirmed", case="C-1", search_id="s-1", rank=1, subject_id="S9", settled_by=None))
    )
    assert (lead.status, lead.subject_id, lead.rank, lead.settled_by_supervisor) == (
        gateway_pb2.CANDIDATE_STATUS_LEAD,
        "S9",
        1,
        False,
    )
    settled = lifecycle_event(stored(entry("review.rejected", search_id="s-1", rank=2, settled_by="sue")))
    assert settled.status == gateway_pb2.CANDIDATE_STATUS_REJECTED and settled.settled_by_supervisor

    gone = lifecycle_event(stored(entry("record.deleted", record_id="r-1", subject_id="S9", reason="court order")))
    assert (gone.record_id, gone.subject_id, gone.reason) == ("r-1", "S9", "court order")
    finished = lifecycle_event(
        stored(entry("gallery.import_finished", import_id="imp-1", total=10, enrolled=8, rejected=1, failed=1))
    )
    assert finished.import_id == "imp-1" and finished.import_counts.enrolled == 8
    assert finished.occurred_at.seconds > 0
    # A record whose details are not an object still makes an event (ids only).
    odd = lifecycle_event(
        stored(AuditEntry("e", "probe.deleted", finished.occurred_at.ToJsonString(), "", "", "", "", "[]"))
    )
    assert odd.kind == "probe.deleted" and odd.search_id == ""


@pytest_asyncio.fixture(loop_scope="session")
async def jetstream(nats_url: str) -> AsyncIterator[nats.js.JetStreamContext]:
    client = await nats.connect(nats_url)
    js = client.jetstream()
    try:
        await js.delete_stream(EVENTS_STREAM)
    except nats.js.errors.NotFoundError:
        pass
    yield js
    await js.delete_stream(EVENTS_STREAM)
    await client.close()


async def on_feed(js: nats.js.JetStreamContext) -> list[tuple[int, str]]:
    info = await js.stream_info(EVENTS_STREAM)
    found: list[tuple[int, str]] = []
    if not info.state.messages:
        return found
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await js.get_msg(EVENTS_STREAM, seq)
        event = events_pb2.LifecycleEvent()
        event.ParseFromString(raw.data or b"")
        found.append((event.record_sequence, event.kind))
    return found


@ASYNC
async def test_the_feed_publishes_lifecycle_records_in_order_once_and_resumes_from_the_stream(
    jetstream: nats.js.JetStreamContext, tmp_path: Path
) -> None:
    chain = AuditChain(tmp_path / "audit.db", SIGNER)
    try:
        chain.append(entry("search.completed", "s-1", "C-1"), entry("x").occurred_at)
        chain.append(entry("review.submitted", case="C-1", search_id="s-1"), entry("x").occurred_at)  # not a feed kind
        chain.append(entry("review.confirmed", case="C-1", search_id="s-1", rank=1), entry("x").occurred_at)
        first = EventFeed(jetstream, chain, replicas=1, max_age_days=30)
        await first.ensure()
        assert await first.publish_pending() == 2
        assert await on_feed(jetstream) == [(1, "search.completed"), (3, "review.confirmed")]

        # A second replica, or this one restarted, starts from where the stream ends.
        chain.append(entry("subject.deleted", subject_id="S", reason="expunged"), entry("x").occurred_at)
        second = EventFeed(jetstream, chain, replicas=1, max_age_days=30)
        assert await second.publish_pending() == 1
        assert await first.publish_pending() == 0
        assert [kind for _, kind in await on_feed(jetstream)] == [
            "search.completed",
            "review.confirmed",
            "subject.deleted",
        ]
    finally:
        chain.close()


@ASYNC
async def test_two_replicas_racing_store_each_record_once(jetstream: nats.js.JetStreamContext, tmp_path: Path) -> None:
    chain = AuditChain(tmp_path / "audit.db", SIGNER)
    try:
        for n in range(40):
            chain.append(entry("search.completed", f"s-{n}", "C-2"), entry("x").occurred_at)
        replicas = [EventFeed(jetstream, chain, replicas=1, max_age_days=30) for _ in range(2)]
        await replicas[0].ensure()
        await asyncio.gather(*(feed.publish_pending() for feed in replicas))
        assert [seq for seq, _ in await on_feed(jetstream)] == list(range(1, 41))
    finally:
        chain.close()


@ASYNC
async def test_a_durable_follower_resumes_where_it_acknowledged_and_can_replay(
    jetstream: nats.js.JetStreamContext, tmp_path: Path
) -> None:
    chain = AuditChain(tmp_path / "audit.db", SIGNER)
    feed = EventFeed(jetstream, chain, replicas=1, max_age_days=30)
    await feed.ensure()
    stop, appended = asyncio.Event(), asyncio.Event()
    publisher = asyncio.create_task(run_feed(feed, lambda: False, appended, stop, idle_s=0.1))
    try:
        for n in range(5):
            chain.append(entry("search.completed", f"f-{n}", "C-3"), entry("x").occurred_at)
        appended.set()
        for _ in range(100):  # the publisher's rounds
            if len(await on_feed(jetstream)) == 5:
                break
            await asyncio.sleep(0.05)
        follower = EventFollower(jetstream, consumer_config("case-system-test", ack_wait_s=1))
        got = await follower.fetch(3, timeout_s=5)
        assert [e.event.event_id for e in got] == ["f-0", "f-1", "f-2"]
        for event in got[:2]:
            await event.ack()
        await follower.close()  # "f-2" was given but never acknowledged

        for n in range(5, 7):
            chain.append(entry("search.completed", f"f-{n}", "C-3"), entry("x").occurred_at)
        appended.set()
        again = EventFollower(jetstream, consumer_config("case-system-test", ack_wait_s=1))
        seen: list[str] = []
        deadline = asyncio.get_running_loop().time() + 10
        while len(set(seen)) < 5 and asyncio.get_running_loop().time() < deadline:
            for event in await again.fetch(10, timeout_s=1):
                seen.append(event.event.event_id)
                await event.ack()
        # Nothing lost, and only the unacknowledged one given twice.
        assert sorted(set(seen)) == ["f-2", "f-3", "f-4", "f-5", "f-6"]
        await again.close()

        # Replay from a time: a new consumer from just before f-5 was recorded.
        records = chain.query(kinds=["search.completed"], event_id="f-5")
        since = dt.datetime.fromisoformat(records[0].entry.occurred_at.replace("Z", "+00:00")) - dt.timedelta(
            milliseconds=1
        )
        replay = EventFollower(jetstream, consumer_config("replay-test", since=since))
        replayed = [e.event.event_id for e in await replay.fetch(10, timeout_s=2)]
        assert replayed[:2] == ["f-5", "f-6"] and "f-4" not in replayed
        await replay.close()
    finally:
        stop.set()
        await publisher
        chain.close()


@ASYNC
async def test_a_fetch_whose_wait_runs_out_on_an_empty_feed_gives_nothing_and_never_raises(
    jetstream: nats.js.JetStreamContext, tmp_path: Path
) -> None:
    # nats-py ends a pull whose deadline runs out between its two requests with a bare
    # asyncio.TimeoutError (no message), not its own FetchTimeoutError. On a loaded machine a
    # one-second fetch lands there now and then, and `candor events follow` died with "error: ".
    # Waits short enough to land between the two requests make it happen on every run.
    chain = AuditChain(tmp_path / "audit.db", SIGNER)
    await EventFeed(jetstream, chain, replicas=1, max_age_days=30).ensure()
    chain.close()
    follower = EventFollower(jetstream, consumer_config("empty-feed-test"))
    try:
        for n in range(300):
            assert await follower.fetch(8, timeout_s=0.0002 + n * 0.00002) == []
    finally:
        await follower.close()


@ASYNC
async def test_an_acknowledgement_waits_out_a_server_slow_to_answer(tmp_path: Path) -> None:
    # nats-py waits one second for an acknowledgement's answer. A loaded NATS node can take longer,
    # and the follower then died after printing the event. The server is paused for 2.5 s here.
    port = free_port()
    server = start_nats_server(tmp_path / "nats", port)
    client = await nats.connect(f"nats://127.0.0.1:{port}")
    chain = AuditChain(tmp_path / "audit.db", SIGNER)
    try:
        feed = EventFeed(client.jetstream(), chain, replicas=1, max_age_days=30)
        await feed.ensure()
        chain.append(entry("search.completed", "slow-ack", "C-4"), entry("x").occurred_at)
        assert await feed.publish_pending() == 1
        follower = EventFollower(client.jetstream(), consumer_config("slow-ack-test"))
        [delivery] = await follower.fetch(1, timeout_s=5)
        os.kill(server.pid, signal.SIGSTOP)
        asyncio.get_running_loop().call_later(2.5, os.kill, server.pid, signal.SIGCONT)
        await delivery.ack()
        assert await follower.fetch(1, timeout_s=0.5) == []  # the acknowledgement took
        await follower.close()
    finally:
        os.kill(server.pid, signal.SIGCONT)
        chain.close()
        await client.close()
        server.terminate()
        server.wait(10)

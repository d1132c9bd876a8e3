"""An import photo's result and a dead-lettered work item on a real nats-server: each sender's under
a message id keyed with its login, so another service's user cannot have it dropped as a repeat;
and the register of queued photos, where the matcher's claim and the gateway's take-back race."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest

from candor.ingest.v1 import ingest_pb2
from candor_kit import Bus
from candor_kit.audit_events import AuditPublisher, ensure_audit_stream
from candor_kit.bus import keyed_message_id, message_key
from candor_kit.ingest import MATCH, ItemRegister, dead_letter, ensure_ingest_streams, publish_result, result_subject
from candor_kit.subjects import INGEST_DEAD_PREFIX, INGEST_DEAD_STREAM, INGEST_RESULTS_STREAM


@pytest.fixture
async def matcher_and_detector(nats_url: str) -> AsyncIterator[tuple[Bus, Bus]]:
    """Two connections as two services would hold them: each with the key of its own login."""
    matcher = Bus(await nats.connect(nats_url), secret=b"the matcher's password")
    detector = Bus(await nats.connect(nats_url), secret=b"the detector's password")
    await ensure_ingest_streams(matcher)
    await ensure_audit_stream(matcher)
    try:
        yield matcher, detector
    finally:
        await matcher.close()
        await detector.close()


def enrolled(import_id: str, item: int) -> ingest_pb2.ItemResult:
    return ingest_pb2.ItemResult(
        item=ingest_pb2.ItemRef(import_id=import_id, item=item), outcome=ingest_pb2.OUTCOME_ENROLLED, stage="matcher"
    )


async def test_a_message_id_taken_first_by_another_user_does_not_drop_the_matchers_result(
    matcher_and_detector: tuple[Bus, Bus],
) -> None:
    matcher, detector = matcher_and_detector
    import_id = "squatted-results"
    subject = result_subject(import_id, 0, "match")
    # The detector's user may store results on its own subject, under any message id it likes: the
    # one results had (<import>.<item>.<outcome>), and the keyed one made without the matcher's key.
    taken = [
        f"{import_id}.0.OUTCOME_ENROLLED",
        keyed_message_id(b"", subject, "OUTCOME_ENROLLED"),
        keyed_message_id(detector.message_key, subject, "OUTCOME_ENROLLED"),
    ]
    rejected = ingest_pb2.ItemResult(item=enrolled(import_id, 0).item, outcome=ingest_pb2.OUTCOME_REJECTED)
    for msg_id in taken:
        await detector.jetstream.publish(
            result_subject(import_id, 0, "detect"), rejected.SerializeToString(), headers={"Nats-Msg-Id": msg_id}
        )
    await publish_result(matcher, enrolled(import_id, 0), "match")
    stored = await matcher.jetstream.get_last_msg(INGEST_RESULTS_STREAM, subject)
    assert ingest_pb2.ItemResult.FromString(stored.data or b"").outcome == ingest_pb2.OUTCOME_ENROLLED


async def test_a_result_sent_again_by_any_replica_of_one_service_is_stored_once(
    matcher_and_detector: tuple[Bus, Bus], nats_url: str
) -> None:
    matcher, _ = matcher_and_detector
    replica = Bus(await nats.connect(nats_url), secret=b"the matcher's password")
    try:
        assert replica.message_key == matcher.message_key == message_key(b"the matcher's password")
        await publish_result(matcher, enrolled("resent-results", 3), "match")
        before = (await matcher.jetstream.stream_info(INGEST_RESULTS_STREAM)).state.messages
        await publish_result(replica, enrolled("resent-results", 3), "match")
        after = (await matcher.jetstream.stream_info(INGEST_RESULTS_STREAM)).state.messages
    finally:
        await replica.close()
    assert after == before


async def test_a_dead_letters_message_id_taken_first_by_another_user_does_not_drop_the_matchers_copy(
    matcher_and_detector: tuple[Bus, Bus],
) -> None:
    matcher, detector = matcher_and_detector
    # The match stream's sequences are plain to see: the detector's user takes the message id the
    # next dead letter of the match stage would have had, on its own dead-letter subject.
    sequence = 4242
    await detector.jetstream.publish(
        f"{INGEST_DEAD_PREFIX}.detect", b"a decoy", headers={"Nats-Msg-Id": f"dead.match.{sequence}"}
    )
    item = enrolled("dead-lettered", 0).item
    await dead_letter(matcher, AuditPublisher(matcher, "matcher"), MATCH, b"the work", sequence, item, "boom", "match")
    info = await matcher.jetstream.stream_info(INGEST_DEAD_STREAM)
    kept = [
        await matcher.jetstream.get_msg(INGEST_DEAD_STREAM, seq)
        for seq in range(info.state.first_seq, info.state.last_seq + 1)
    ]
    last = kept[-1]
    assert (last.subject, last.data) == (f"{INGEST_DEAD_PREFIX}.match", b"the work")
    assert (last.headers or {}).get("Candor-Original-Sequence") == str(sequence)


async def test_the_matchers_claim_and_the_gateways_take_back_race_and_exactly_one_wins(
    matcher_and_detector: tuple[Bus, Bus],
) -> None:
    matcher, gateway = matcher_and_detector
    at_gateway, at_matcher = ItemRegister(gateway), ItemRegister(matcher)
    await at_gateway.ensure()
    items = [ingest_pb2.ItemRef(import_id="raced-claims", item=item, subject_id=f"s{item}") for item in range(40)]
    for item in items:
        await at_gateway.register(item, "ab" * 32)
    # Each photo at once claimed by the matcher and taken back on an earlier stage's rejection.
    claims = asyncio.gather(*(at_matcher.claim(item, "ab" * 32) for item in items))
    take_backs = asyncio.gather(*(at_gateway.take_back(item, by_matcher=False) for item in items))
    claimed, taken = await asyncio.gather(claims, take_backs)
    # For each, either the matcher enrols it and its photo stays, or the photo goes and the matcher
    # refuses it: never both.
    assert [problem == "" for problem, _ in claimed] == [not went for went in taken]
    # A claim holds: the matcher's redelivery enrols, an earlier stage's rejection takes nothing back,
    # and the matcher's own rejection does.
    first = ingest_pb2.ItemRef(import_id="raced-claims", item=98)
    await at_gateway.register(first, "ab" * 32)
    assert await at_matcher.claim(first, "ab" * 32) == ("", True)
    assert await at_matcher.claim(first, "ab" * 32) == ("", True)
    assert not await at_gateway.take_back(first, by_matcher=False)
    assert await at_gateway.take_back(first, by_matcher=True)
    # A photo taken back is never claimed after, nor one changed on the way.
    gone = ingest_pb2.ItemRef(import_id="raced-claims", item=99)
    await at_gateway.register(gone, "ab" * 32)
    assert await at_gateway.take_back(gone, by_matcher=False)
    assert "taken back" in (await at_matcher.claim(gone, "ab" * 32))[0]
    assert "differs" in (await at_matcher.claim(items[0], "cd" * 32))[0]

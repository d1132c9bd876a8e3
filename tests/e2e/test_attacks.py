"""An attacker on the network against the local process stack: each way around the safeguards that
was found open is now closed, and what already held still holds.

The stack is the one `candor stack up` runs: nats-server with the per-service users, the five
services as processes, the service token on the internal gRPC APIs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from PIL import Image

from candor.audit.v1 import audit_pb2, audit_pb2_grpc
from candor.common.v1 import common_pb2
from candor.detector.v1 import detector_pb2, detector_pb2_grpc
from candor.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor.ingest.v1 import ingest_pb2
from candor.matcher.v1 import matcher_pb2, matcher_pb2_grpc
from candor_cli import LocalStack
from candor_cli.processes import StackError
from candor_client import GatewayClient
from candor_kit import subjects
from candor_kit.audit_events import AuditPublisher, audit_message_id
from candor_kit.bus import Bus, message_key, round_trip
from candor_kit.identifiers import record_id_for
from candor_kit.ingest import Stage, dead_letter
from tests.e2e.nats_login import connect_as
from tests.e2e.test_stack_cli import candor, search_json, searching, wait_for_audit

pytestmark = pytest.mark.e2e

#: Every user of the stack's nats-server.
ROLES = tuple(subjects.ROLES)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, samples: Path) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("attacked"), extra_env={"CANDOR_AUDIT_CHECKPOINT_INTERVAL_S": "1"})
    stack.up()
    candor(stack, "enroll", str(samples / "obama.jpg"), "--subject", "obama")
    yield stack
    stack.down()


def gateway_stub(stack: LocalStack) -> tuple[grpc.Channel, gateway_pb2_grpc.GatewayServiceStub]:
    state = stack.state()
    assert state is not None
    channel = grpc.insecure_channel(
        state.gateway,
        options=[("grpc.max_send_message_length", 32 << 20), ("grpc.max_receive_message_length", 32 << 20)],
    )
    return channel, gateway_pb2_grpc.GatewayServiceStub(channel)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def audit_rows(stack: LocalStack, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(stack.data / "audit" / "audit.db") as db:
        return db.execute(sql, params).fetchall()


def database_bytes(stack: LocalStack) -> int:
    """The audit database's size on disk, its write-ahead log included."""
    database = stack.data / "audit" / "audit.db"
    return sum(path.stat().st_size for path in (database, Path(f"{database}-wal")) if path.exists())


def violations(run: Any) -> list[str]:
    """Run ``run(errors)`` and return the permission violations the server reported."""
    errors: list[str] = []
    asyncio.run(run(errors))
    return [e for e in errors if "permissions violation" in e.lower()]


# --- 3: the bus has users; none may empty the audit stream ----------------------------------------


def test_the_bus_takes_no_anonymous_or_wrong_login(stack: LocalStack) -> None:
    state = stack.state()
    assert state is not None

    async def attempt(**login: str) -> None:
        client = await nats.connect(state.nats_url, allow_reconnect=False, max_reconnect_attempts=0, **login)
        await client.close()

    for login in ({}, {"user": "gateway", "password": "guess"}, {"user": "admin", "password": "admin"}):
        with pytest.raises(Exception, match=r"[Aa]uthorization"):
            asyncio.run(attempt(**login))


@pytest.mark.parametrize("role", ROLES)
def test_no_user_may_purge_or_delete_the_audit_streams(stack: LocalStack, role: str) -> None:
    before = audit_rows(stack, "SELECT COUNT(*) FROM audit_record")[0][0]

    async def run(errors: list[str]) -> None:
        async def remember(exc: Exception) -> None:
            errors.append(str(exc))

        client = await connect_as(stack, role, error_cb=remember)
        js = client.jetstream()
        for stream in (subjects.AUDIT_STREAM, subjects.AUDIT_CHECKPOINT_STREAM):
            for attack in (js.purge_stream(stream), js.delete_stream(stream), js.delete_msg(stream, 1)):
                with pytest.raises(Exception):  # noqa: B017 - refused: no reply comes, or an error
                    await asyncio.wait_for(attack, 0.5)
        await round_trip(client)
        await client.close()

    assert len(violations(run)) >= 6, role
    info = asyncio.run(stream_state(stack))
    assert info[subjects.AUDIT_STREAM] >= before and info[subjects.AUDIT_CHECKPOINT_STREAM] >= 1


async def stream_state(stack: LocalStack) -> dict[str, int]:
    """How many messages each audit stream holds, read as the audit service's own user."""
    client = await connect_as(stack, "audit")
    js = client.jetstream()
    try:
        return {
            name: (await js.stream_info(name)).state.messages
            for name in (subjects.AUDIT_STREAM, subjects.AUDIT_CHECKPOINT_STREAM)
        }
    finally:
        await client.close()


def test_no_other_user_may_read_probe_photos_on_the_bus(stack: LocalStack) -> None:
    async def run(errors: list[str]) -> None:
        async def remember(exc: Exception) -> None:
            errors.append(str(exc))

        for role in ("embedder", "matcher", "audit", "operator"):
            client = await connect_as(stack, role, error_cb=remember)
            await client.subscribe(subjects.DETECT)  # where every probe photo travels
            await round_trip(client)
            await client.close()

    assert len(violations(run)) == 4


def test_only_the_audit_service_may_put_events_on_the_feed(stack: LocalStack) -> None:
    # A forged LEAD on the feed would reach every case system as if two reviewers had confirmed it.
    forgers = [role for role in ROLES if role != "audit"]

    async def run(errors: list[str]) -> None:
        async def remember(exc: Exception) -> None:
            errors.append(str(exc))

        for role in forgers:
            client = await connect_as(stack, role, error_cb=remember)
            await client.publish(f"{subjects.EVENTS_PREFIX}.review.confirmed", b"forged")
            await round_trip(client)
            await client.close()

    assert len(violations(run)) == len(forgers)


def test_the_integration_user_follows_the_feed_and_reaches_nothing_else(stack: LocalStack, samples: Path) -> None:
    found = search_json(stack, samples / "obama2.jpg", "FEED-E2E-1")
    followed = candor(stack, "events", "follow", "--durable", "e2e-cms", "--kinds", "search.completed", "--idle", "5")
    events = [json.loads(line) for line in followed.stdout.splitlines()]
    mine = [e for e in events if e.get("search_id") == found["search_id"]]
    assert len(mine) == 1 and mine[0]["case_number"] == "FEED-E2E-1" and mine[0]["kind"] == "search.completed"
    # The same durable consumer resumes after what it acknowledged: nothing is given twice.
    again = candor(stack, "events", "follow", "--durable", "e2e-cms", "--kinds", "search.completed", "--idle", "2")
    assert found["search_id"] not in again.stdout

    async def run(errors: list[str]) -> None:
        async def remember(exc: Exception) -> None:
            errors.append(str(exc))

        client = await connect_as(stack, "integration", error_cb=remember)
        await client.publish(subjects.audit_subject("gateway", "review.submitted"), b"forged")
        await client.publish(subjects.MATCH_SEARCH, b"")
        await client.subscribe(subjects.DETECT)
        await client.subscribe(f"{subjects.AUDIT_EVENT_PREFIX}.>")
        await round_trip(client)
        await client.close()

    assert len(violations(run)) == 4


# --- 1: only the owner of an event kind may write it ----------------------------------------------


def forged_review(search_id: str, reviewer: str) -> audit_pb2.AuditEvent:
    now = Timestamp()
    now.GetCurrentTime()
    details = {"search_id": search_id, "rank": 1, "subject_id": "obama", "decision": "confirm", "role": "reviewer"}
    return audit_pb2.AuditEvent(
        event_id=str(uuid.uuid4()),
        kind="review.submitted",
        occurred_at=now,
        actor=reviewer,
        case_number="ATK-1",
        purpose="investigation",
        details_json=json.dumps({**details, "notes": ""}),
    )


def test_a_review_forged_from_the_detectors_user_makes_no_lead(stack: LocalStack, samples: Path) -> None:
    found = search_json(stack, samples / "obama2.jpg", "ATK-1")
    as_gateway = forged_review(found["search_id"], "rita")
    as_itself = forged_review(found["search_id"], "rob")

    async def run(errors: list[str]) -> None:
        async def remember(exc: Exception) -> None:
            errors.append(str(exc))

        client = await connect_as(stack, "detector", error_cb=remember)
        js = client.jetstream()
        # Under the gateway's name: the server refuses the publish itself.
        with pytest.raises(Exception):  # noqa: B017 - no acknowledgement comes
            await js.publish(
                subjects.audit_subject("gateway", "review.submitted"), as_gateway.SerializeToString(), timeout=3
            )
        # Under its own name: stored on the stream, refused by the audit service.
        await js.publish(subjects.audit_subject("detector", "review.submitted"), as_itself.SerializeToString())
        await client.close()

    assert violations(run)
    rows = wait_for_audit(
        stack,
        "SELECT details_json FROM audit_record WHERE kind = 'audit.event_refused' AND details_json LIKE ?",
        (f"%{as_itself.event_id}%",),
    )
    refused = json.loads(rows[0][0])
    assert refused["reason"] == "detector does not own audit events of this kind"
    assert refused["subject"] == subjects.audit_subject("detector", "review.submitted")
    forged_ids = (as_gateway.event_id, as_itself.event_id)
    assert audit_rows(stack, "SELECT COUNT(*) FROM audit_record WHERE event_id IN (?, ?)", forged_ids)[0][0] == 0
    shown = candor(stack, "review", "show", found["search_id"]).stdout
    assert "LEAD" not in shown and "rita" not in shown and "rob" not in shown
    assert "audit chain OK" in candor(stack, "audit", "verify").stdout


def squatting_event(event_id: str) -> audit_pb2.AuditEvent:
    """An event of the matcher's own kind under ``event_id``: its user may write such events."""
    now = Timestamp()
    now.GetCurrentTime()
    return audit_pb2.AuditEvent(
        event_id=event_id, kind="matcher.searched", occurred_at=now, actor="unstated", details_json="{}"
    )


def test_an_event_id_the_matchers_user_takes_first_does_not_silence_a_reviewer(
    stack: LocalStack, samples: Path
) -> None:
    found = search_json(stack, samples / "obama2.jpg", "ATK-SQ")
    rita = candor(stack, "token", "issue", "--user", "rita", "--roles", "reviewer", "--ttl", "10m").stdout.strip()
    # The matcher's user sees every search's id (each search request it answers carries it), so it
    # can tell the id rita's analysis of this probe will have, and take that id first for an event
    # of its own kind, with the message ids a publisher could give it.
    taken = f"{found['search_id']}/analysis/{hashlib.sha256(b'rita').hexdigest()[:32]}"

    async def squat() -> None:
        client = await connect_as(stack, "matcher")
        try:
            js = client.jetstream()
            for msg_id in squatted_message_ids(stack, "review.analysed", taken):
                await js.publish(
                    subjects.audit_subject("matcher", "matcher.searched"),
                    squatting_event(taken).SerializeToString(),
                    headers={"Nats-Msg-Id": msg_id},
                )
        finally:
            await client.close()

    asyncio.run(squat())
    wait_for_audit(stack, "SELECT 1 FROM audit_record WHERE event_id = ? AND kind = 'matcher.searched'", (taken,))
    candor(stack, "--token", rita, "review", "analyse", found["search_id"], "--sufficient")
    # Her analysis is recorded under its own id beside the matcher's event, and counts.
    wait_for_audit(stack, "SELECT 1 FROM audit_record WHERE event_id = ? AND kind = 'review.analysed'", (taken,))
    shown = candor(stack, "--token", rita, "review", "show", found["search_id"]).stdout
    assert "wait for your analysis" not in shown, shown
    assert "audit chain OK" in candor(stack, "audit", "verify").stdout


def squatted_message_ids(stack: LocalStack, kind: str, event_id: str) -> list[str]:
    """The message ids the matcher's user can give its event to claim ``kind``/``event_id``: the
    event id (publishers used it until the stream's message ids were keyed), and the keyed id
    made with no key and with the key of its own login."""
    password = Path(stack.nats_login("matcher").password_file).read_bytes().strip()
    return [event_id, *(audit_message_id(key, kind, event_id) for key in (b"", message_key(password)))]


def forged_result(import_id: str, item: int, outcome: int, image_sha256: str) -> ingest_pb2.ItemResult:
    """An import photo's result as a worker would store it, saying ``outcome``."""
    return ingest_pb2.ItemResult(
        item=ingest_pb2.ItemRef(import_id=import_id, item=item, subject_id="biden", submitted_by="local-operator"),
        outcome=outcome,  # type: ignore[arg-type]
        reason=ingest_pb2.REJECT_REASON_NO_FACE if outcome == ingest_pb2.OUTCOME_REJECTED else 0,  # type: ignore[arg-type]
        image_sha256=image_sha256,
        stage="detector",
    )


def test_results_forged_from_the_detectors_user_change_no_import_and_take_back_no_photo(
    stack: LocalStack, samples: Path, tmp_path: Path
) -> None:
    photo = (samples / "biden.jpg").read_bytes()
    (tmp_path / "biden").mkdir()
    (tmp_path / "biden" / "biden.jpg").write_bytes(photo)
    (tmp_path / "nobody").mkdir()
    Image.new("RGB", (320, 240), (128, 128, 128)).save(tmp_path / "nobody" / "wall.jpg")
    (tmp_path / "nobody" / "empty.jpg").write_bytes(b"")  # refused by the gateway itself
    import_id = "forged-results"
    candor(stack, "gallery", "import", str(tmp_path), "--import-id", import_id, "--quiet")
    record_id = record_id_for("biden", hashlib.sha256(photo).hexdigest())
    state = stack.state()
    assert state is not None
    with GatewayClient(state.gateway, stack.token()) as client:
        honest = {result.item.item: (result.outcome, result.reason) for result in client.import_results(import_id)}
    assert sorted(honest.values()) == [
        (ingest_pb2.OUTCOME_ENROLLED, 0),
        (ingest_pb2.OUTCOME_REJECTED, ingest_pb2.REJECT_REASON_NO_FACE),
        (ingest_pb2.OUTCOME_REJECTED, ingest_pb2.REJECT_REASON_UNREADABLE),
    ]
    # The detector's user stores results too (its own rejections). With it, an attacker says the
    # enrolled photo was rejected (which would take its stored photo back) and the rejected ones
    # enrolled, on the subject results had, on the detector's own, and on another photo's.
    prefix = f"{subjects.INGEST_RESULT_PREFIX}.{import_id}"

    async def run(errors: list[str]) -> None:
        async def remember(exc: Exception) -> None:
            errors.append(str(exc))

        client = await connect_as(stack, "detector", error_cb=remember)
        for item, (outcome, _) in honest.items():
            opposite = (
                ingest_pb2.OUTCOME_REJECTED if outcome == ingest_pb2.OUTCOME_ENROLLED else ingest_pb2.OUTCOME_ENROLLED
            )
            forged = forged_result(import_id, item, opposite, hashlib.sha256(photo).hexdigest()).SerializeToString()
            other = (item + 1) % len(honest)
            for subject in (f"{prefix}.{item}", f"{prefix}.{item}.detect", f"{prefix}.{other}.detect"):
                await client.publish(subject, forged, headers={"Nats-Msg-Id": str(uuid.uuid4())})
        # Last, junk where the detector's honest rejection of the blank photo was kept.
        blank = next(item for item, (_, reason) in honest.items() if reason == ingest_pb2.REJECT_REASON_NO_FACE)
        await client.publish(f"{prefix}.{blank}.detect", b"\xff not a result")
        await round_trip(client)
        await client.close()

    refused = violations(run)
    with GatewayClient(state.gateway, stack.token()) as client:
        after = {result.item.item: (result.outcome, result.reason) for result in client.import_results(import_id)}
        status = client.import_status(import_id)
        try:
            kept = hashlib.sha256(client.record_photo(record_id).image).hexdigest()
        except grpc.RpcError as exc:
            kept = str(exc.code())  # type: ignore[attr-defined]
    # Each photo keeps the result its own stage gave it, and the enrolled one its stored photo.
    assert (after, (status.enrolled, status.rejected), kept) == (honest, (1, 2), hashlib.sha256(photo).hexdigest())
    assert len(refused) == 3  # a result on the subject every stage shared is refused by the server


def test_a_photo_the_detectors_user_rejects_and_hands_on_is_not_enrolled_without_its_stored_photo(
    stack: LocalStack, samples: Path, tmp_path: Path
) -> None:
    # A compromised detector can say "no face" of a photo (the gateway then takes the photo it
    # stored back) and still hand the photo on: the matcher, further along the line, would enrol a
    # record whose stored photo is gone, and a reviewer would have nothing to compare with.
    photo = (samples / "biden.jpg").read_bytes()
    (tmp_path / "handed-on").mkdir()
    (tmp_path / "handed-on" / "biden.jpg").write_bytes(photo)
    import_id = "rejected-and-handed-on"
    record_id = record_id_for("handed-on", hashlib.sha256(photo).hexdigest())
    state = stack.state()
    assert state is not None
    matcher = state.pids["matcher"]

    async def queued_for_the_matcher() -> None:
        client = await connect_as(stack, "gateway")
        try:
            deadline = time.monotonic() + 60
            while (await client.jetstream().stream_info(subjects.ingest_stream("match"))).state.messages == 0:
                assert time.monotonic() < deadline, "the photo never reached the match stage"
                await asyncio.sleep(0.2)
        finally:
            await client.close()

    async def reject_as_the_detector() -> None:
        client = await connect_as(stack, "detector")
        forged = forged_result(import_id, 0, ingest_pb2.OUTCOME_REJECTED, hashlib.sha256(photo).hexdigest())
        forged.item.subject_id = "handed-on"
        await client.jetstream().publish(
            f"{subjects.INGEST_RESULT_PREFIX}.{import_id}.0.detect", forged.SerializeToString()
        )
        await client.close()

    os.kill(matcher, signal.SIGSTOP)
    try:
        candor(stack, "gallery", "import", str(tmp_path), "--import-id", import_id, "--no-wait", "--quiet")
        asyncio.run(queued_for_the_matcher())
        asyncio.run(reject_as_the_detector())
        with GatewayClient(state.gateway, stack.token()) as client:
            assert client.import_status(import_id).rejected == 1  # the gateway read it, and took back
    finally:
        os.kill(matcher, signal.SIGCONT)
    deadline = time.monotonic() + 60
    with GatewayClient(state.gateway, stack.token()) as client:
        while (result := client.import_results(import_id)[0]).stage != "matcher":
            assert time.monotonic() < deadline, "the matcher never settled the photo"
            time.sleep(0.2)
        try:
            kept = hashlib.sha256(client.record_photo(record_id).image).hexdigest()
        except grpc.RpcError as exc:
            kept = str(exc.code())  # type: ignore[attr-defined]
    # The matcher does not enrol a photo the gateway took back: the import says so, and no
    # record stands without its photo.
    assert (result.outcome, kept) == (ingest_pb2.OUTCOME_REJECTED, "StatusCode.NOT_FOUND"), result
    assert "taken back" in result.detail
    enrolled = "SELECT 1 FROM audit_record WHERE kind = 'gallery.import_enrolled' AND details_json LIKE ?"
    assert audit_rows(stack, enrolled, (f"%{record_id}%",)) == []


def test_a_failure_event_id_the_detectors_user_takes_first_does_not_hide_the_matchers_failure(
    stack: LocalStack,
) -> None:
    # The detector's user sees every import photo (each detect work item names its import and
    # item), so it can tell the ids a later stage's failure of that photo would be audited under,
    # and write failure events of its own under them first: gallery.import_item_failed is a kind
    # the detector, embedder, matcher and gateway all write.
    import_id = "squatted-failure"
    item = ingest_pb2.ItemRef(import_id=import_id, item=0, subject_id="nobody", submitted_by="local-operator")
    sequence = 4242
    taken = [f"{import_id}.0.failed", f"{import_id}.0.failed.match", f"dead.match.{sequence}", f"dead.{sequence}.match"]

    secrets = {
        role: Path(stack.nats_login(role).password_file).read_bytes().strip() for role in ("detector", "matcher")
    }

    async def logged_in(role: str) -> tuple[Bus, AuditPublisher]:
        bus = Bus(await connect_as(stack, role), secrets[role])
        return bus, AuditPublisher(bus, role)

    async def run() -> None:
        bus, forger = await logged_in("detector")
        details = {"import_id": import_id, "item": 0, "stage": "match", "error": "forged by the detector"}
        for event_id in taken:
            await forger.publish(
                "gallery.import_item_failed", actor="local-operator", details=details, event_id=event_id
            )
        await bus.client.close()
        # Then the matcher gives up on that photo's work, through the code it runs.
        bus, audit = await logged_in("matcher")
        await dead_letter(bus, audit, Stage("match"), b"work", sequence, item, "the matcher gave up", "match")
        await bus.client.close()

    asyncio.run(run())
    failures = "SELECT details_json FROM audit_record WHERE kind = 'gallery.import_item_failed' AND details_json LIKE ?"
    wait_for_audit(stack, failures, ("%the matcher gave up%",))
    # The matcher's failure is recorded; what the detector wrote under another stage's ids is not,
    # and the attempt is.
    assert audit_rows(stack, failures, ("%forged by the detector%",)) == []
    refusals = "SELECT 1 FROM audit_record WHERE kind = 'audit.event_refused' AND details_json LIKE ?"
    assert audit_rows(stack, refusals, (f"%{import_id}.0.failed.match%only its own stage%",))
    assert "audit chain OK" in candor(stack, "audit", "verify").stdout


# --- 2: around the gateway, still audited; internal APIs need the service token -------------------


def test_a_search_and_a_read_made_around_the_gateway_are_audited_where_they_happen(
    stack: LocalStack, samples: Path
) -> None:
    search_json(stack, samples / "obama2.jpg", "ATK-AROUND")  # a search the attacker's read can find
    request_id = str(uuid.uuid4())

    async def run() -> tuple[int, int]:
        client = await connect_as(stack, "gateway")
        try:
            search = matcher_pb2.SearchRequest(
                model=common_pb2.ModelRef(id="sface", version="1", metric="cosine", dimension=128),
                embedding=common_pb2.Embedding(values=[0.0] * 127 + [1.0]),
                limit=10,
                max_distance=2.0,
                origin=common_pb2.Origin(request_id=request_id),
            )
            reply = await client.request(subjects.MATCH_SEARCH, search.SerializeToString(), timeout=10)
            found = matcher_pb2.SearchResponse.FromString(reply.data)
            query = audit_pb2.QueryRequest(kinds=["search.completed"], origin=common_pb2.Origin(request_id=request_id))
            read = await client.request(subjects.AUDIT_QUERY, query.SerializeToString(), timeout=10)
            return len(found.candidates), len(audit_pb2.QueryResponse.FromString(read.data).records)
        finally:
            await client.close()

    candidates, records = asyncio.run(run())
    assert candidates >= 1 and records >= 1  # the attacker got answers...
    searched = wait_for_audit(
        stack, "SELECT actor, details_json FROM audit_record WHERE kind = 'matcher.searched' AND details_json LIKE ?",
        (f"%{request_id}%",),
    )  # fmt: skip
    assert searched[0][0] == "unstated" and len(json.loads(searched[0][1])["record_ids"]) == candidates
    queried = wait_for_audit(
        stack, "SELECT actor FROM audit_record WHERE kind = 'audit.queried' AND details_json LIKE ?",
        (f"%{request_id}%",),
    )  # fmt: skip
    assert queried[0][0] == "unstated"  # ...and each left a record naming no user


def internal_calls(stack: LocalStack, samples: Path) -> dict[str, Any]:
    """One call to each internal service's gRPC API."""
    state = stack.state()
    assert state is not None
    photo = (samples / "obama2.jpg").read_bytes()
    return {
        "detector": lambda channel, md: detector_pb2_grpc.DetectorServiceStub(channel).Detect(
            detector_pb2.DetectRequest(image=photo), metadata=md, timeout=30
        ),
        "embedder": lambda channel, md: embedder_pb2_grpc.EmbedderServiceStub(channel).GetModel(
            embedder_pb2.GetModelRequest(), metadata=md, timeout=30
        ),
        "matcher": lambda channel, md: matcher_pb2_grpc.MatcherServiceStub(channel).GetGallery(
            matcher_pb2.GetGalleryRequest(), metadata=md, timeout=30
        ),
        "audit": lambda channel, md: audit_pb2_grpc.AuditServiceStub(channel).Verify(
            audit_pb2.VerifyRequest(), metadata=md, timeout=30
        ),
    }


def test_internal_grpc_apis_answer_only_with_the_service_token(stack: LocalStack, samples: Path) -> None:
    state = stack.state()
    assert state is not None
    token = (stack.data / "secrets" / "service-token").read_text().strip()
    for name, call in internal_calls(stack, samples).items():
        with grpc.insecure_channel(state.addresses[name]) as channel:
            for metadata in ((), bearer("not-the-token"), bearer(stack.token())):
                with pytest.raises(grpc.RpcError) as refused:
                    call(channel, metadata)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
            assert call(channel, bearer(token)) is not None, name


def test_nothing_an_internal_service_is_given_opens_another_services_api(stack: LocalStack, samples: Path) -> None:
    # Whoever takes over one internal service (the detector, say) reads every file it was given.
    # None of them may be the token that opens the internal APIs: with it, a search or a deletion
    # made straight at the matcher would skip the gateway's case binding, purposes and reviews.
    state = stack.state()
    assert state is not None
    given: dict[str, str] = {}
    for name in ("detector", "embedder", "matcher", "audit"):
        environ = Path(f"/proc/{state.pids[name]}/environ").read_bytes().split(b"\0")
        for setting in environ:
            key, _, value = setting.decode().partition("=")
            path = Path(value)
            if key.endswith("_FILE") and path.is_file() and path.stat().st_size < 4096:
                text = path.read_text(errors="replace").strip()
                if text.isprintable():  # one line: what a bearer token could be (not a PEM key)
                    given[f"{name}: {key}"] = text
    assert any("SERVICE_TOKEN" in key for key in given)
    calls = internal_calls(stack, samples)
    with grpc.insecure_channel(state.addresses["matcher"]) as channel:
        opened = []
        for key, text in given.items():
            try:
                calls["matcher"](channel, bearer(text))
                opened.append(key)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, key  # type: ignore[attr-defined]
    assert opened == []


# --- 4: what a refusal records is bounded; hostile text is refused --------------------------------


def test_an_unauthenticated_search_with_an_8_mb_case_number_costs_the_chain_a_few_hundred_bytes(
    stack: LocalStack, samples: Path
) -> None:
    case = "C" * (8 << 20)
    channel, gateway = gateway_stub(stack)
    before = database_bytes(stack)
    with channel:
        request = gateway_pb2.SearchRequest(
            probe_image=(samples / "obama2.jpg").read_bytes(), case_number=case, purpose="investigation"
        )
        with pytest.raises(grpc.RpcError) as refused:
            gateway.Search(request, metadata=bearer("forged.token.value"), timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    rows = wait_for_audit(
        stack,
        "SELECT case_number, details_json FROM audit_record WHERE kind = 'search.refused' AND actor = 'anonymous' "
        "AND details_json LIKE '%case_number_malformed%'",
    )
    recorded_case, details = rows[-1]
    assert recorded_case == ""
    malformed = json.loads(details)["case_number_malformed"]
    assert malformed["length"] == len(case) and len(details) < 1000
    assert database_bytes(stack) - before < 256 << 10  # not 8 MB: a few pages of SQLite


@pytest.mark.parametrize(
    ("case", "purpose", "authorisation", "code", "text"),
    [
        ("ATK-4", "p" * 10_240, "W-1", grpc.StatusCode.PERMISSION_DENIED, "the purpose is not allowed"),
        ("a/../../../tmp/x", "investigation", "W-1", grpc.StatusCode.INVALID_ARGUMENT, "case number"),
        ("ATK-4\x1b[2J", "investigation", "W-1", grpc.StatusCode.INVALID_ARGUMENT, "case number"),
        ("ATK-4", "investigation", "W-1\x1b]0;owned\x07", grpc.StatusCode.INVALID_ARGUMENT, "control"),
        ("ATK-4", "investigation", "W-1\u202e", grpc.StatusCode.INVALID_ARGUMENT, "control"),
    ],
)
def test_hostile_text_in_a_search_is_refused_with_a_clear_status(
    stack: LocalStack, samples: Path, case: str, purpose: str, authorisation: str, code: grpc.StatusCode, text: str
) -> None:
    channel, gateway = gateway_stub(stack)
    with channel:
        request = gateway_pb2.SearchRequest(
            probe_image=(samples / "obama2.jpg").read_bytes(),
            case_number=case,
            purpose=purpose,
            authorisation_reference=authorisation,
        )
        with pytest.raises(grpc.RpcError) as refused:
            gateway.Search(request, metadata=bearer(stack.token()), timeout=30)
    assert refused.value.code() == code
    assert text in (refused.value.details() or "")
    assert len(refused.value.details() or "") < 1100


# --- 5: each case's export has its own file -------------------------------------------------------


def test_two_cases_exported_into_one_folder_keep_two_files(stack: LocalStack, samples: Path, tmp_path: Path) -> None:
    for case in ("2026.000123", "2026.000124"):
        search_json(stack, samples / "obama2.jpg", case)
    for case in ("2026.000123", "2026.000124"):
        wait_for_audit(stack, "SELECT 1 FROM audit_record WHERE case_number = ?", (case,))
        candor(stack, "audit", "export", "--case", case, "--out", str(tmp_path))
    for case in ("2026.000123", "2026.000124"):
        exported = json.loads((tmp_path / f"case-{case}.json").read_text())
        assert exported["case_number"] == case
        assert {r["event"]["case_number"] for r in exported["records"]} == {case}


# --- 7: a photo cut in its header -----------------------------------------------------------------


def test_a_jpeg_cut_inside_its_header_is_invalid_argument(stack: LocalStack, samples: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.jpg"
    cut.write_bytes((samples / "obama2.jpg").read_bytes()[:300])
    refused = candor(stack, *searching(cut, "ATK-7"), check=False)
    assert refused.returncode == 2 and "INVALID_ARGUMENT" in refused.stderr and "truncated" in refused.stderr


# --- 8: no reflection -----------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["gateway", "detector", "embedder", "matcher", "audit"])
@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_no_service_describes_itself_by_reflection(stack: LocalStack, service: str, version: str) -> None:
    state = stack.state()
    assert state is not None
    token = (stack.data / "secrets" / "service-token").read_text().strip()
    with grpc.insecure_channel(state.addresses[service]) as channel:
        reflect = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo")
        with pytest.raises(grpc.RpcError) as refused:
            list(reflect(iter([b""]), metadata=bearer(token), timeout=10))
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --- 6: a cut tail is caught at start, and nothing is appended to a broken chain ------------------


def test_a_tail_cut_with_its_checkpoints_is_caught_when_the_audit_service_starts(stack: LocalStack) -> None:
    # Last in the module: it breaks the chain.
    time.sleep(2)  # a checkpoint of the current head is in the outside store
    stack.stop_service("audit")
    head = audit_rows(stack, "SELECT MAX(sequence) FROM audit_record")[0][0]
    with sqlite3.connect(stack.data / "audit" / "audit.db") as db:
        db.execute("DELETE FROM audit_record WHERE sequence > ?", (head - 3,))
        db.execute("DELETE FROM audit_checkpoint WHERE sequence > ?", (head - 3,))
    assert audit_rows(stack, "SELECT COUNT(*) FROM audit_record")[0][0] == head - 3
    with pytest.raises(StackError, match="did not report SERVING"):
        stack.start_service("audit", timeout_s=20)
    broken = [
        json.loads(line)
        for line in (stack.logs / "audit.log").read_text().splitlines()
        if line.startswith("{") and '"audit_chain_broken"' in line
    ]
    assert broken and "tail cut" in broken[-1]["problem"]
    verified = candor(stack, "audit", "verify", check=False)
    assert verified.returncode == 1 and "tail cut" in verified.stdout
    assert audit_rows(stack, "SELECT COUNT(*) FROM audit_record")[0][0] == head - 3

"""Bulk enrolment through the process stack: ``candor gallery import`` over the JetStream work
queue, with real models on real photos, the report, idempotence, resuming, dead letters, and
workers killed with SIGKILL mid-import."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import nats
import pytest
from PIL import Image, ImageFilter

from candor.common.v1 import common_pb2
from candor.gateway.v1 import gateway_pb2
from candor.ingest.v1 import ingest_pb2
from candor.matcher.v1 import matcher_pb2
from candor_cli import LocalStack
from candor_cli.gallery import import_id_for, read_source
from candor_client import GatewayClient
from candor_kit import subjects
from candor_kit.identifiers import record_id_for
from candor_kit.ingest import Stage, item_digest, item_key
from tests.e2e.nats_login import connect_as
from tests.e2e.test_attacks import audit_rows
from tests.e2e.test_stack_cli import CANDOR, candor, searching, wait_for_audit

pytestmark = pytest.mark.e2e

#: Short redelivery and few deliveries, so the tests see retries and dead letters in seconds, and
#: the gateway's sweep every two seconds, so it settles imports nobody asks about in seconds.
FAST_RETRIES = {
    "CANDOR_IMPORT_ACK_WAIT_S": "3",
    "CANDOR_IMPORT_MAX_DELIVER": "3",
    "CANDOR_GATEWAY_RETENTION_SWEEP_S": "2",
}


def _stack(folder: Path) -> LocalStack:
    stack = LocalStack(folder, extra_env=FAST_RETRIES)
    stack.up()
    return stack


@pytest.fixture(scope="module")
def import_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = _stack(tmp_path_factory.mktemp("import-stack"))
    yield stack
    stack.down()


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def source(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of <subject>/<image> with one photo for each way an import item can end."""
    root = tmp_path_factory.mktemp("source")
    obama = Image.open(samples / "obama.jpg")
    photos = {
        "obama/obama.jpg": (samples / "obama.jpg").read_bytes(),
        "obama/obama2.jpg": (samples / "obama2.jpg").read_bytes(),
        "biden/biden.jpg": (samples / "biden.jpg").read_bytes(),
        "crowd/t1.jpg": (samples / "t1.jpg").read_bytes(),  # six faces
        "obama/tiny.jpg": _jpeg(obama.resize((obama.width // 6, obama.height // 6))),  # a 44 px face
        "obama/blurred.jpg": _jpeg(obama.filter(ImageFilter.GaussianBlur(8))),  # sharpness about 5
        "nobody/wall.jpg": _jpeg(Image.new("RGB", (400, 400), (128, 128, 128))),  # no face
        "broken/scan.jpg": b"\xff\xd8\xff not really a JPEG",
        "big/huge.jpg": b"\xff\xd8\xff" + bytes(13 << 20),  # over the gateway's 12 MiB
    }
    for name, data in photos.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(data)
    return root


def client_for(stack: LocalStack) -> GatewayClient:
    state = stack.state()
    assert state is not None
    return GatewayClient(state.gateway, stack.token())


def test_an_import_enrols_the_good_photos_and_reports_each_rejection_with_its_reason(
    import_stack: LocalStack, source: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    result = candor(import_stack, "gallery", "import", str(source), "--report", str(report), "--quiet")
    import_id = import_id_for(read_source(source))
    assert f"import {import_id}: finished" in result.stdout
    written = json.loads(report.read_text())
    assert int(written["enrolled"]) == 3
    assert int(written.get("duplicates", 0)) == 0
    assert int(written["rejected"]) == 6
    reasons = {p["item"]["image_ref"]: (p["reason"], p["detail"]) for p in written["problems"]}
    assert {ref: reason for ref, (reason, _) in reasons.items()} == {
        "crowd/t1.jpg": "REJECT_REASON_SEVERAL_FACES",
        "obama/tiny.jpg": "REJECT_REASON_TOO_SMALL",
        "obama/blurred.jpg": "REJECT_REASON_BLURRY",
        "nobody/wall.jpg": "REJECT_REASON_NO_FACE",
        "broken/scan.jpg": "REJECT_REASON_UNREADABLE",
        "big/huge.jpg": "REJECT_REASON_TOO_LARGE",
    }
    assert "6 faces" in reasons["crowd/t1.jpg"][1]
    for line in ("several faces", "too small", "blurry", "no face", "unreadable", "too large"):
        assert line in result.stdout
    # The enrolled photos are searchable, and each enrolment and the import are audited.
    found = json.loads(candor(import_stack, *searching(source / "obama" / "obama2.jpg", "IMP-1"), "--json").stdout)
    assert found["candidates"][0]["subject_id"] == "obama"
    [(details,)] = wait_for_audit(
        import_stack, "SELECT details_json FROM audit_record WHERE kind = 'gallery.import_finished'"
    )
    assert json.loads(details)["enrolled"] == 3
    named = named_photos(import_stack, import_id, 3)
    assert sorted(named.values()) == [1, 1, 1], named  # each enrolled photo named once
    # Each enrolled photo is kept in the photo store under its record; the photos the workers
    # rejected were stored when queued and taken back when their result was read.
    with client_for(import_stack) as client:
        for name in ("obama/obama.jpg", "obama/obama2.jpg", "biden/biden.jpg"):
            photo = (source / name).read_bytes()
            record_id = record_id_for(name.split("/")[0], hashlib.sha256(photo).hexdigest())
            assert client.record_photo(record_id).image == photo
        for name in ("crowd/t1.jpg", "obama/tiny.jpg", "obama/blurred.jpg", "nobody/wall.jpg"):
            record_id = record_id_for(name.split("/")[0], hashlib.sha256((source / name).read_bytes()).hexdigest())
            with pytest.raises(grpc.RpcError) as gone:
                client.record_photo(record_id)
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND, name  # type: ignore[attr-defined]


def test_an_import_nobody_asks_about_again_is_finished_and_its_rejected_photo_taken_back(
    import_stack: LocalStack, samples: Path
) -> None:
    """An importer may go away once its photos are queued (a killed job, an integration that does
    not poll): the gateway's sweep settles the import itself. It takes back the stored photo of an
    item that made no record while the import is still open, and records the import finished once
    every photo has a result, with no one asking for its status."""
    wall = _jpeg(Image.new("RGB", (400, 400), (90, 90, 90)))  # no face
    faces = [(samples / name).read_bytes() for name in ("biden.jpg", "obama2.jpg")]
    finished = "SELECT details_json FROM audit_record WHERE kind = 'gallery.import_finished' AND event_id = ?"
    _put_import_record(import_stack, "unreadable-import", b"not an import record")  # the sweep passes it by
    with client_for(import_stack) as client:
        client.start_import("nobody-asks", "three photos, never asked about again", 3)
        first = [
            gateway_pb2.ImportItem(item=0, subject_id="unasked", image=wall),
            gateway_pb2.ImportItem(item=1, subject_id="unasked", image=faces[0]),
        ]
        assert client.submit_import("nobody-asks", first).queued == 2
        # From here on nothing asks for the import's status or results.
        wall_record = record_id_for("unasked", hashlib.sha256(wall).hexdigest())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                client.record_photo(wall_record)
            except grpc.RpcError as gone:
                assert gone.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
                break
            time.sleep(0.5)
        else:
            pytest.fail("the rejected photo was not taken back without a status read")
        with sqlite3.connect(import_stack.data / "audit" / "audit.db") as db:
            assert db.execute(finished, ("nobody-asks.finished",)).fetchall() == []  # one photo to come

        last = [gateway_pb2.ImportItem(item=2, subject_id="unasked-too", image=faces[1])]
        assert client.submit_import("nobody-asks", last).queued == 1
        [(details,)] = wait_for_audit(import_stack, finished, ("nobody-asks.finished",))
        counts = json.loads(details)
        assert (counts["enrolled"], counts["rejected"], counts["total"]) == (2, 1, 3)
        face_record = record_id_for("unasked", hashlib.sha256(faces[0]).hexdigest())
        assert client.record_photo(face_record).image == faces[0]


def test_importing_the_same_source_again_changes_nothing(import_stack: LocalStack, source: Path) -> None:
    with client_for(import_stack) as client:
        before = gallery_records(import_stack)
        # The same command resumes the finished import: nothing is sent again.
        again = candor(import_stack, "gallery", "import", str(source), "--quiet")
        assert "enrolled    3" in again.stdout
        # A new import of the same photos: every good photo is a duplicate, skipped.
        candor(import_stack, "gallery", "import", str(source), "--import-id", "second-look", "--quiet")
        status = client.import_status("second-look")
        assert (status.enrolled, status.duplicates, status.rejected) == (0, 3, 6)
        assert gallery_records(import_stack) == before
        assert (gallery_records(import_stack, "obama"), gallery_records(import_stack, "biden")) == (2, 1)
        shown = candor(import_stack, "gallery", "status", "second-look").stdout
        assert "duplicates  3" in shown


def test_a_batch_naming_an_item_outside_the_import_is_refused_whole(import_stack: LocalStack, samples: Path) -> None:
    with client_for(import_stack) as client:
        client.start_import("range-check", "two photos", 2)
        items = [
            gateway_pb2.ImportItem(item=0, subject_id="range", image=(samples / "biden.jpg").read_bytes()),
            gateway_pb2.ImportItem(item=2, subject_id="range", image=(samples / "biden.jpg").read_bytes()),
        ]
        with pytest.raises(grpc.RpcError) as refused:
            client.submit_import("range-check", items)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        time.sleep(2)
        assert client.import_status("range-check").done == 0  # nothing of the batch was queued


def test_a_photo_that_keeps_failing_is_dead_lettered_and_audited(import_stack: LocalStack) -> None:
    with client_for(import_stack) as client:
        client.start_import("poison-pill", "a hand-made work item", 1)

        # A work item no matcher can enrol (a 3-d vector for a 128-d model), put on the queue directly.
        poison = ingest_pb2.MatchWork(
            item=ingest_pb2.ItemRef(import_id="poison-pill", item=0, subject_id="poison", submitted_by="tester"),
            image_sha256="0" * 64,
            model=common_pb2.ModelRef(id="sface", version="1", metric="cosine", dimension=128),
            embedding=common_pb2.Embedding(values=[0.1, 0.2, 0.3]),
        )
        _register_as_queued(import_stack, poison.item, poison.image_sha256)
        _publish(import_stack, f"{subjects.INGEST_WORK_PREFIX}.match", poison.SerializeToString())
        deadline = time.monotonic() + 60
        while (status := client.import_status("poison-pill")).done < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert status.failed == 1
        [result] = client.import_results("poison-pill", problems_only=True)
        assert result.outcome == ingest_pb2.OUTCOME_FAILED and "dimensions" in result.detail
    [(actor, details)] = wait_for_audit(
        import_stack, "SELECT actor, details_json FROM audit_record WHERE kind = 'gallery.import_item_failed'"
    )
    assert actor == "tester" and json.loads(details)["stage"] == "match"
    assert (f"{subjects.INGEST_WORK_PREFIX}.match", poison.SerializeToString()) in _dead_letters(import_stack)


@pytest.mark.parametrize("gateway_down", [False, True], ids=["gateway-up", "gateway-down"])
def test_an_item_whose_worker_dies_on_it_every_time_is_dead_lettered(
    import_stack: LocalStack, samples: Path, tmp_path: Path, gateway_down: bool
) -> None:
    """A worker that crashes on an item never settles it. When its deliveries run out, JetStream
    announces it once, on the pull that finds it spent, and the gateway dead-letters it so that the
    import still finishes; a gateway down at that moment (restarting, upgraded) does so when it is
    back, or the item would stay in the queue for ever."""
    import_id = "spent-unheard" if gateway_down else "spent-heard"
    (tmp_path / import_id).mkdir()
    photo = _jpeg(Image.open(samples / "obama3.jpg"), quality=73 if gateway_down else 77)
    (tmp_path / import_id / "one.jpg").write_bytes(photo)
    _give_the_gallery_a_model(import_stack, samples)
    import_stack.stop_service("embedder")
    try:
        candor(import_stack, "gallery", "import", str(tmp_path), "--import-id", import_id, "--no-wait")
        if gateway_down:
            import_stack.stop_service("gateway")
        try:
            _take_without_settling(import_stack, "ingest-embed-sface", deliveries=3, ack_wait_s=3.0)
        finally:
            if gateway_down:
                import_stack.start_service("gateway")
    finally:
        import_stack.start_service("embedder")
    with client_for(import_stack) as client:
        deadline = time.monotonic() + 30
        while (status := client.import_status(import_id)).done < 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (status.done, status.failed) == (1, 1), "the spent item was never settled: its import never ends"
        [result] = client.import_results(import_id)
        assert "no worker settled it in 3 deliveries" in result.detail
    embed_work = f"{subjects.INGEST_WORK_PREFIX}.embed.sface"
    assert any(subject == embed_work for subject, _ in _dead_letters(import_stack))
    assert _embed_queue_length(import_stack) == 0


def test_a_subject_expunged_while_its_photo_waits_in_the_queue_is_not_enrolled_again(
    import_stack: LocalStack, samples: Path, tmp_path: Path
) -> None:
    (tmp_path / "EXP-1").mkdir()
    (tmp_path / "EXP-1" / "photo.jpg").write_bytes(_jpeg(Image.open(samples / "biden.jpg"), quality=81))
    _give_the_gallery_a_model(import_stack, samples)
    import_stack.stop_service("embedder")  # the photo waits in the queue before the matcher
    try:
        candor(import_stack, "gallery", "import", str(tmp_path), "--import-id", "before-expunge", "--no-wait")
        candor(import_stack, "delete", "EXP-1", "--reason", "court order 7")
    finally:
        import_stack.start_service("embedder")
    with client_for(import_stack) as client:
        _wait_until(client, "before-expunge", 1)
        [result] = client.import_results("before-expunge")
        assert result.reason == ingest_pb2.REJECT_REASON_EXPUNGED
        assert gallery_records(import_stack, "EXP-1") == 0
        # An import started after the deletion may enrol the subject again.
        candor(import_stack, "gallery", "import", str(tmp_path), "--import-id", "after-expunge", "--quiet")
        assert client.import_status("after-expunge").enrolled == 1
        assert gallery_records(import_stack, "EXP-1") == 1


# --- the crash test ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def many_photos(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About a hundred distinct photos: four real faces, each cropped, scaled and compressed 25 ways."""
    root = tmp_path_factory.mktemp("many")
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"):
        image = Image.open(samples / name).convert("RGB")
        image = image.resize((500, round(500 * image.height / image.width)))
        folder = root / name.removesuffix(".jpg")
        folder.mkdir()
        for variant in range(25):
            crop = image.crop((variant % 5 * 4, variant // 5 * 4, image.width - variant % 3 * 4, image.height))
            (folder / f"v{variant:02d}.jpg").write_bytes(_jpeg(crop, quality=70 + variant))
    return root


def test_workers_killed_mid_import_lose_nothing_and_double_nothing(
    many_photos: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    stack = _stack(tmp_path_factory.mktemp("crash-stack"))
    try:
        total = len(read_source(many_photos))
        importer = subprocess.Popen(
            [
                CANDOR,
                "--data",
                str(stack.data),
                "gallery",
                "import",
                str(many_photos),
                "--quiet",
                "--import-id",
                "crash-test",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with client_for(stack) as client:
            # The embedder and the matcher go down together: one at a time, the backlog that
            # builds while the first restarts can finish the import before the second is killed.
            for services, after in ((("detector",), 5), (("embedder", "matcher"), total // 3)):
                done = _wait_until(client, "crash-test", after)
                assert done < total, f"the import finished before the {' and '.join(services)} could be killed"
                state = stack.state()
                assert state is not None
                for service in services:
                    os.kill(state.pids[service], signal.SIGKILL)
                time.sleep(1.0)
                for service in services:
                    stack.start_service(service)
            out, err = importer.communicate(timeout=300)
            assert importer.returncode == 0, out + err
            status = client.import_status("crash-test")
            results = client.import_results("crash-test")
        assert status.done == total == len(results)  # the report accounts for every photo
        assert (status.failed, status.rejected) == (0, 0)
        assert status.enrolled == total, (status.enrolled, status.duplicates)
        # Exactly one gallery record per accepted photo: nothing lost, nothing doubled.
        assert len({r.record_id for r in results}) == total
        assert gallery_records(stack) == total
        # And each named once in the audit chain, the photos a worker settled together in one
        # event, a photo delivered again after its event was stored not named twice.
        named = named_photos(stack, "crash-test", total)
        assert set(named.values()) == {1} and len(named) == total, named
    finally:
        stack.down()


def named_photos(stack: LocalStack, import_id: str, photos: int, timeout_s: float = 30) -> Counter[int]:
    """How often each item of ``import_id`` is named in the chain's records of its enrolments,
    once ``photos`` items are (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = audit_rows(
            stack,
            "SELECT details_json FROM audit_record WHERE kind = 'gallery.import_enrolled' AND details_json LIKE ?",
            (f'%"import_id":"{import_id}"%',),
        )
        named = Counter(photo["item"] for (details,) in rows for photo in json.loads(details)["records"])
        if len(named) >= photos or time.monotonic() > deadline:
            return named
        time.sleep(0.2)


def _wait_until(client: GatewayClient, import_id: str, done: int, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status = client.import_status(import_id)
        except Exception:  # noqa: BLE001 - the import may not have started yet
            time.sleep(0.2)
            continue
        if status.done >= done:
            return int(status.done)
        time.sleep(0.2)
    pytest.fail(f"import {import_id} did not reach {done} results")


# --- NATS helpers ---------------------------------------------------------------------------------


def _nats(stack: LocalStack, role: str):  # type: ignore[no-untyped-def]
    return connect_as(stack, role)


def _publish(stack: LocalStack, subject: str, data: bytes) -> None:
    """Publish import work as the embedder would hand it on to the matcher."""

    async def run() -> None:
        client = await _nats(stack, "embedder")
        await client.jetstream().publish(subject, data)
        await client.close()

    asyncio.run(run())


def _put_import_record(stack: LocalStack, import_id: str, value: bytes) -> None:
    """Write an import record as the gateway would (here one that does not parse)."""

    async def run() -> None:
        client = await _nats(stack, "gateway")
        try:
            await (await client.jetstream().key_value(subjects.IMPORTS_BUCKET)).put(import_id, value)
        finally:
            await client.close()

    asyncio.run(run())


def _register_as_queued(stack: LocalStack, item: ingest_pb2.ItemRef, image_sha256: str) -> None:
    """Enter an item in the gateway's register of queued items, as the gateway does when it queues
    one (the matcher enrols nothing else)."""

    async def run() -> None:
        client = await _nats(stack, "gateway")
        try:
            register = await client.jetstream().key_value(subjects.IMPORT_ITEMS_BUCKET)
            await register.put(item_key(item), item_digest(item, image_sha256).encode("ascii"))
        finally:
            await client.close()

    asyncio.run(run())


def _give_the_gallery_a_model(stack: LocalStack, samples: Path) -> None:
    """Imports into an empty gallery ask a running embedder which model they enrol with; a test that
    stops the embedder before importing first makes sure the gallery has its model (when the test
    runs on its own, without the imports before it)."""
    if "has no model yet" in candor(stack, "gallery", "models").stdout:
        candor(stack, "enroll", str(samples / "obama.jpg"), "--subject", "MODEL-SEED")


def _take_without_settling(stack: LocalStack, consumer: str, deliveries: int, ack_wait_s: float) -> None:
    """Act as a worker that dies on its item: take it ``deliveries`` times and never settle it,
    then pull once more, which finds it spent (and has JetStream announce it, now)."""

    async def run() -> None:
        client = await _nats(stack, "embedder")
        js = client.jetstream()
        subscription = await js.pull_subscribe_bind(
            durable=consumer, stream=subjects.ingest_stream(Stage.from_consumer(consumer).name)
        )
        for _ in range(deliveries):
            deadline = time.monotonic() + 30
            while True:
                try:
                    [msg] = await subscription.fetch(1, timeout=1)
                    break
                except (nats.errors.TimeoutError, TimeoutError):
                    assert time.monotonic() < deadline, "the item was not redelivered"
            assert msg.metadata.num_delivered <= deliveries
            await asyncio.sleep(ack_wait_s + 0.5)
        with contextlib.suppress(nats.errors.TimeoutError, TimeoutError):
            spent = await subscription.fetch(1, timeout=2)
            raise AssertionError(f"an item spent its deliveries and was delivered again: {spent}")
        await client.close()

    asyncio.run(run())


def gallery_records(stack: LocalStack, subject_id: str = "", model_id: str = "") -> int:
    """The matcher's count of gallery records (of one subject, of one model, when given)."""

    async def run() -> int:
        client = await _nats(stack, "operator")
        request = matcher_pb2.GetGalleryRequest(subject_id=subject_id, model_id=model_id)
        reply = await client.request(subjects.MATCH_GALLERY, request.SerializeToString(), 10)
        await client.close()
        answer = matcher_pb2.GetGalleryResponse()
        answer.ParseFromString(reply.data)
        return int(answer.records)

    return asyncio.run(run())


def _embed_queue_length(stack: LocalStack) -> int:
    """How many items wait in the embed stage's queue (a spent one stays there until settled)."""

    async def run() -> int:
        client = await _nats(stack, "embedder")
        try:
            return int((await client.jetstream().stream_info(subjects.ingest_stream("embed"))).state.messages)
        finally:
            await client.close()

    return asyncio.run(run())


def _dead_letters(stack: LocalStack) -> list[tuple[str, bytes]]:
    async def run() -> list[tuple[str, bytes]]:
        client = await _nats(stack, "operator")
        js = client.jetstream()
        info = await js.stream_info(subjects.INGEST_DEAD_STREAM)
        found = []
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(subjects.INGEST_DEAD_STREAM, sequence)
            found.append(((message.headers or {}).get("Candor-Original-Subject", ""), message.data or b""))
        await client.close()
        return found

    return asyncio.run(run())

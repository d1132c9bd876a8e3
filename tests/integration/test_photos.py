"""The photo store through the running services: enrolled photos and retained probes are kept
encrypted in the JetStream object store, shown to reviewers with their face boxes (every view
audited), deleted with their record or subject, and probes swept once their candidates are decided
and the policy's days have passed."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import os
import random
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from nats.js.api import ObjectMeta

from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor_gateway import retention
from candor_gateway.photos import PhotoHeader, PhotoStore
from candor_kit import Bus, PreconditionFailed
from candor_kit.aes_keys import generate_aes_key, read_aes_key
from candor_kit.identifiers import record_id_for
from candor_kit.subjects import PHOTOS_BUCKET
from tests.integration.conftest import InProcessStack, as_user
from tests.integration.cuts import audited, cut_short, deadlines, nothing_left_half_done
from tests.integration.test_governance import (
    AUDITOR,
    ENROLLER,
    INVESTIGATOR,
    RITA,
    ROB,
    SUE,
    fresh_investigator,
    look_at_both,
    policy_with,
    probe_request,
    restore_policy,  # noqa: F401 - a fixture
    review,
    search_as,
)
from tests.integration.test_search_flow import audit_records
from tests.objects import object_stored
from tests.waiting import eventually

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def enrolled(gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path) -> gateway_pb2.EnrollResponse:
    """obama.jpg enrolled as "obama" (idempotent: other modules may have enrolled it too)."""
    request = gateway_pb2.EnrollRequest(image=(samples / "obama.jpg").read_bytes(), subject_id="obama")
    return await gateway.Enroll(request, metadata=ENROLLER)


async def raw_object(stack: InProcessStack, name: str) -> bytes:
    """An object's stored bytes, as anyone with access to NATS would read them."""
    client = await nats.connect(stack.nats_url)
    try:
        bucket = await client.jetstream().object_store(PHOTOS_BUCKET)
        return (await bucket.get(name)).data or b""
    finally:
        await client.close()


async def test_an_enrolled_photo_is_kept_encrypted_and_shown_to_a_reviewer_with_its_face_box_each_view_audited(
    stack: InProcessStack,
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    samples: Path,
    enrolled: gateway_pb2.EnrollResponse,
    store: PhotoStore,
) -> None:
    photo = (samples / "obama.jpg").read_bytes()
    sha256 = hashlib.sha256(photo).hexdigest()
    assert enrolled.record_id == record_id_for("obama", sha256)
    stored = await raw_object(stack, f"gallery/{enrolled.record_id}")
    assert photo[2000:2064] not in stored and len(stored) == len(photo) + 12 + 16

    search_id = await search_as(gateway, samples, INVESTIGATOR, "PHOTO-1")
    await gateway.RecordAnalysis(gateway_pb2.RecordAnalysisRequest(search_id=search_id, sufficient=True), metadata=RITA)
    shown = await gateway.GetSearchPhoto(gateway_pb2.GetSearchPhotoRequest(search_id=search_id, rank=1), metadata=RITA)
    assert shown.image == photo and shown.sha256 == sha256 and shown.subject_id == "obama"
    assert shown.HasField("face_box") and shown.face_box.width > 60
    probe = await gateway.GetSearchPhoto(gateway_pb2.GetSearchPhotoRequest(search_id=search_id, rank=0), metadata=RITA)
    assert probe.image == (samples / "obama2.jpg").read_bytes() and probe.face_box.width > 60

    async def both_views_audited() -> bool:
        records = await audit_records(stack, kinds=["photo.viewed"], case_number="PHOTO-1")
        seen = [json.loads(r.event.details_json) for r in records if r.event.actor == "rita"]
        return sorted(d["photo"] for d in seen) == ["candidate", "probe"] and all(d["sha256"] for d in seen)

    await eventually(both_views_audited)


async def test_the_searcher_other_roles_and_unknown_candidates_are_refused_a_photo_and_the_refusal_audited(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, enrolled: object
) -> None:
    iris = as_user("investigating-reviewer")
    own = await search_as(gateway, samples, iris, "PHOTO-2")
    await gateway.RecordAnalysis(gateway_pb2.RecordAnalysisRequest(search_id=own, sufficient=True), metadata=RITA)
    refusals = [
        (iris, own, 1, grpc.StatusCode.PERMISSION_DENIED),  # the searcher, though a reviewer too
        (INVESTIGATOR, own, 1, grpc.StatusCode.PERMISSION_DENIED),  # no reviewing role
        (ENROLLER, own, 0, grpc.StatusCode.PERMISSION_DENIED),
        (as_user("not-a-token"), own, 0, grpc.StatusCode.UNAUTHENTICATED),
        (RITA, own, 17, grpc.StatusCode.NOT_FOUND),  # no such candidate
        (RITA, own, -1, grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for metadata, search_id, rank, code in refusals:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway.GetSearchPhoto(
                gateway_pb2.GetSearchPhotoRequest(search_id=search_id, rank=rank), metadata=metadata
            )
        assert refused.value.code() == code, (metadata, rank)

    async def refusals_audited() -> bool:
        records = await audit_records(stack, kinds=["photo.view.refused"])
        return {"iris", "ivy", "eric", "anonymous", "rita"} <= {r.event.actor for r in records}

    await eventually(refusals_audited)


async def test_an_altered_or_foreign_keyed_photo_fails_its_integrity_check(
    stack: InProcessStack, enrolled: gateway_pb2.EnrollResponse, store: PhotoStore
) -> None:
    bus = await Bus.connect(stack.nats_url, "photo-key-test")
    try:
        foreign = PhotoStore(read_aes_key(stack.root / "secrets" / "photo-key", "photo key"))
        await foreign.open(bus)  # the same bucket read with the right key: the photo is fine
        assert (await foreign.get("gallery", enrolled.record_id)) is not None
        other_key = stack.root / "other-photo-key"
        other_key.write_bytes(generate_aes_key())
        wrong = PhotoStore(read_aes_key(other_key, "photo key"))
        await wrong.open(bus)
        with pytest.raises(PreconditionFailed, match="integrity"):
            await wrong.get("gallery", enrolled.record_id)
    finally:
        await bus.close()

    # A header swapped onto another object's ciphertext is caught too.
    fake = PhotoHeader("gallery", "00000000-0000-0000-0000-000000000001", "ab" * 32, subject_id="someone")
    await store.put(fake, b"a photo")
    original = await store.bucket.get(f"gallery/{enrolled.record_id}")
    info = await store.bucket.get_info(fake.name)
    info.description = original.info.description
    await store.bucket.update_meta(fake.name, info)
    with pytest.raises(PreconditionFailed):
        await store.get("gallery", fake.key)
    assert await store.delete("gallery", fake.key)


async def test_a_photo_is_stored_in_chunks_of_up_to_a_mebibyte_and_read_back_whole(store: PhotoStore) -> None:
    # 2.5 MB: three chunks (1 MiB, 1 MiB and the rest), where nats-py's default made it twenty.
    photo = bytes(range(256)) * 10_000
    header = PhotoHeader("probe", str(uuid.uuid4()), hashlib.sha256(photo).hexdigest(), origin="search")
    await store.put(header, photo)
    try:
        info = await store.bucket.get_info(header.name)
        assert info.chunks == 3 and info.size == len(photo) + 12 + 16  # the nonce and GCM's tag
        kept = await store.get("probe", header.key)
        assert kept is not None and kept.image == photo
    finally:
        await store.delete("probe", header.key)


async def test_a_photo_read_while_it_is_deleted_or_replaced_ends_whole_or_not_found_never_hanging(
    store: PhotoStore,
) -> None:
    """A read races the sweep, an expunge or a replacement in production (the reviewer's view of a
    probe the sweep takes back, say). Whatever point of the read the delete or the replacement
    lands at, the read ends at once with a whole photo (the old or the new) or none."""
    rounds = random.Random(27)
    old, new = os.urandom(2_500_000), os.urandom(1_500_000)  # three chunks and two
    for round_ in range(40):
        header = PhotoHeader("probe", str(uuid.uuid4()), hashlib.sha256(old).hexdigest(), origin="search")
        await store.put(header, old)
        read = asyncio.ensure_future(store.get("probe", header.key))
        await asyncio.sleep(rounds.uniform(0, 0.006))
        if round_ % 2:
            await store.put(dataclasses.replace(header, sha256=hashlib.sha256(new).hexdigest()), new)
        else:
            await store.delete("probe", header.key)
        try:
            got = await asyncio.wait_for(read, 10)
        except TimeoutError:
            pytest.fail(f"round {round_}: the read still waited 10 s after its photo was deleted or replaced")
        if round_ % 2:
            assert got is not None and got.image in (old, new), round_
        else:
            assert got is None or got.image == old, round_
        await store.delete("probe", header.key)


async def test_deleting_a_record_or_a_subject_deletes_its_photos_and_says_so_in_the_audit(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, store: PhotoStore
) -> None:
    t1 = (samples / "t1.jpg").read_bytes()
    first = await gateway.Enroll(
        gateway_pb2.EnrollRequest(image=t1, subject_id="photo-del-a", face_index=0), metadata=ENROLLER
    )
    kept = await store.get("gallery", first.record_id)
    assert kept is not None and kept.header.face_box and kept.header.origin == "enroll"
    await gateway.DeleteRecord(
        gateway_pb2.DeleteRecordRequest(record_id=first.record_id, reason="test"), metadata=ENROLLER
    )
    assert await store.header("gallery", first.record_id) is None

    other = await gateway.Enroll(
        gateway_pb2.EnrollRequest(image=(samples / "biden.jpg").read_bytes(), subject_id="photo-del-b"),
        metadata=ENROLLER,
    )
    assert await store.header("gallery", other.record_id) is not None
    await gateway.DeleteSubject(
        gateway_pb2.DeleteSubjectRequest(subject_id="photo-del-b", reason="court order"), metadata=ENROLLER
    )
    assert await store.header("gallery", other.record_id) is None

    async def audited() -> bool:
        records = await audit_records(stack, kinds=["record.deleted", "subject.deleted"])
        details = [json.loads(r.event.details_json) for r in records]
        return any(d.get("record_id") == first.record_id and d["photos_deleted"] == 1 for d in details) and any(
            d.get("subject_id") == "photo-del-b" and d.get("photos_deleted") == 1 for d in details
        )

    await eventually(audited)


async def test_racing_deletes_of_one_photo_say_it_was_deleted_once(store: PhotoStore) -> None:
    """Two gateway replicas, or two expunges of one subject, delete the same photo at once: one of
    them deleted it, and only that one may say so (its count goes into the audit record)."""
    for round_ in range(5):
        key = str(uuid.uuid4())
        await store.put(PhotoHeader("gallery", key, hashlib.sha256(b"x").hexdigest(), subject_id="race"), b"x" * 5000)
        said = await asyncio.gather(*(store.delete("gallery", key) for _ in range(6)))
        assert said.count(True) == 1, f"round {round_}: {said.count(True)} of 6 racing deletes said they deleted it"
        assert await store.header("gallery", key) is None
        assert await store.delete("gallery", key) is False


async def test_racing_expunges_of_one_subject_count_its_records_and_photos_once_on_the_chain(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    """An expunge sent six times at once (a double click, a client retrying on a timeout, without a
    request id): the chain's subject.deleted records are six, but together they must count the
    subject's one record and one photo once: an oversight report sums them."""
    subject = f"photo-race-{uuid.uuid4().hex[:8]}"
    await gateway.Enroll(
        gateway_pb2.EnrollRequest(image=(samples / "biden.jpg").read_bytes(), subject_id=subject), metadata=ENROLLER
    )
    expunge = gateway_pb2.DeleteSubjectRequest(subject_id=subject, reason="court order")
    answers = await asyncio.gather(*(gateway.DeleteSubject(expunge, metadata=ENROLLER) for _ in range(6)))
    assert sum(answer.deleted_records for answer in answers) == 1
    counted: dict[str, int] = {}

    async def all_six_recorded() -> bool:
        records = await audit_records(stack, kinds=["subject.deleted"])
        details = [json.loads(r.event.details_json) for r in records]
        mine = [d for d in details if d.get("subject_id") == subject]
        counted.update(
            expunges=len(mine),
            records=sum(d["records"] for d in mine),
            photos_deleted=sum(d["photos_deleted"] for d in mine),
        )
        return len(mine) == 6

    await eventually(all_six_recorded)
    assert counted == {"expunges": 6, "records": 1, "photos_deleted": 1}, "the photo is counted deleted more than once"


async def test_an_expunge_runs_to_its_end_when_its_caller_stops_waiting_part_way(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, store: PhotoStore
) -> None:
    """A gallery admin's client gives up (a short deadline, a closed laptop) while the gateway is
    between the matcher's delete, the photos' and the audit record. The expunge must still end
    whole (the records, the photo and the subject.deleted record) or, when the gateway never got
    to it, not begin: never a subject whose records are gone but whose photo is kept with no
    record that it was expunged."""
    t1 = (samples / "t1.jpg").read_bytes()
    waits = [0.002, 0.005, 0.008, 0.012, 0.016, 0.025]  # across the expunge's own few ms
    expunged: dict[str, str] = {}
    gave_up: set[str] = set()
    for index, wait in enumerate(waits):
        subject = f"photo-del-cut-{index}-{uuid.uuid4().hex[:6]}"
        enrolled = await gateway.Enroll(
            gateway_pb2.EnrollRequest(image=t1, subject_id=subject, face_index=index), metadata=ENROLLER
        )
        expunged[subject] = enrolled.record_id
        request = gateway_pb2.DeleteSubjectRequest(subject_id=subject, reason="court order")
        if await cut_short(gateway.DeleteSubject(request, metadata=ENROLLER, timeout=wait)):
            gave_up.add(subject)
    half_done: list[str] = []
    whole: set[str] = set()

    async def none_half_done() -> bool:
        by_kind = await audited(stack, ["subject.deleted", "matcher.subject_deleted"], "subject_id")
        half_done.clear()
        whole.clear()
        for subject, record_id in expunged.items():
            kept = await object_stored(store.bucket, f"gallery/{record_id}")
            began = subject in by_kind["matcher.subject_deleted"]
            ended = subject in by_kind["subject.deleted"] and not kept
            if ended:
                whole.add(subject)
            elif began or subject in by_kind["subject.deleted"] or not kept:
                records_were = "gone" if began else "kept"
                half_done.append(f"{subject}: records {records_were}, photo {'kept' if kept else 'gone'}")
        # A cut expunge runs on after its caller left: wait for at least one to have ended.
        return not half_done and bool(whole & gave_up)

    await nothing_left_half_done(
        none_half_done,
        half_done,
        f"{len(waits)} expunges were left half done",
        "no expunge was cut short after it began: the deadlines no longer fall inside one",
    )
    for subject in whole:
        again = await gateway.DeleteSubject(
            gateway_pb2.DeleteSubjectRequest(subject_id=subject, reason="check"), metadata=ENROLLER
        )
        assert again.deleted_records == 0, f"{subject} still had records after its expunge ended"


async def test_an_enrolment_runs_to_its_end_when_its_caller_stops_waiting_part_way(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, store: PhotoStore
) -> None:
    """An enroller's client gives up while the gateway is between storing the photo, the
    matcher's enrolment and the audit record. The enrolment must end whole (the record, its photo
    and the enroll.completed record) or not begin: never a record without its photo, a record the
    gateway did not record, or a photo left behind with no record."""
    image = (samples / "obama.jpg").read_bytes()
    timings = []
    timed = [f"enrol-cut-timed-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    for subject in timed:  # the first, cold, is slower than the rest
        began = time.monotonic()
        await gateway.Enroll(gateway_pb2.EnrollRequest(image=image, subject_id=subject), metadata=ENROLLER)
        timings.append(time.monotonic() - began)
    whole_s = min(timings)
    # Deadlines from half an enrolment's time to a little over it: the last few ms (the photo,
    # the matcher, the audit record) are where a cut leaves it half done.
    waits = deadlines(whole_s, 14, 0.5, 1.15)
    records: dict[str, str] = {}
    gave_up: set[str] = set()
    for index, wait in enumerate(waits):
        subject = f"enrol-cut-{index}-{uuid.uuid4().hex[:6]}"
        records[subject] = record_id_for(subject, hashlib.sha256(image).hexdigest())
        request = gateway_pb2.EnrollRequest(image=image, subject_id=subject)
        if await cut_short(gateway.Enroll(request, metadata=ENROLLER, timeout=wait)):
            gave_up.add(subject)
    half_done: list[str] = []
    whole: set[str] = set()

    async def none_half_done() -> bool:
        found = await audited(stack, ["matcher.enrolled", "enroll.completed"], "record_id")
        half_done.clear()
        whole.clear()
        for subject, record_id in records.items():
            parts = {
                "record": record_id in found["matcher.enrolled"],
                "photo": await object_stored(store.bucket, f"gallery/{record_id}"),
                "enroll.completed": record_id in found["enroll.completed"],
            }
            if all(parts.values()):
                whole.add(subject)
            elif any(parts.values()):
                half_done.append(
                    f"{subject}: "
                    + ", ".join(f"{part} {'kept' if kept else 'missing'}" for part, kept in parts.items())
                )
        # A cut enrolment runs on after its caller left: wait for at least one to have ended.
        return not half_done and bool(whole & gave_up)

    try:
        await nothing_left_half_done(
            none_half_done,
            half_done,
            f"{len(waits)} enrolments were left half done",
            f"no enrolment was cut short after it began (a whole one took {whole_s * 1000:.0f} ms): "
            "the deadlines no longer fall inside one",
        )
    finally:  # the other modules' searches of this face must not meet these subjects
        for subject in [*records, *timed]:
            await gateway.DeleteSubject(
                gateway_pb2.DeleteSubjectRequest(subject_id=subject, reason="test over"), metadata=ENROLLER
            )


async def test_a_subject_expunge_deletes_its_photos_whose_headers_cannot_be_read_and_names_the_ones_it_cannot_place(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, store: PhotoStore
) -> None:
    # A gallery photo's header that this Candor cannot read (written by a newer version before a
    # rollback, by a restore, by hand) must not let the photo outlive its subject's expunge; and a
    # photo that cannot be placed with any subject must be named, not passed over in silence.
    subject = "photo-del-unreadable"
    records = [
        (
            await gateway.Enroll(
                gateway_pb2.EnrollRequest(image=(samples / name).read_bytes(), subject_id=subject), metadata=ENROLLER
            )
        ).record_id
        for name in ("obama2.jpg", "obama3.jpg")
    ]
    unreadable = records[0]
    info = await store.bucket.get_info(f"gallery/{unreadable}")
    # A field this version does not know, as a newer version might add.
    info.description = json.dumps({**json.loads(info.description or ""), "format": 2})
    await store.bucket.update_meta(f"gallery/{unreadable}", info)
    with pytest.raises(ValueError, match="not a photo header"):
        await store.header("gallery", unreadable)
    # An object under a gallery name with no record behind it and no header to read.
    orphan = str(uuid.uuid4())
    await store.bucket.put(f"gallery/{orphan}", b"not a photo", meta=ObjectMeta(description="{"))
    try:
        response = await gateway.DeleteSubject(
            gateway_pb2.DeleteSubjectRequest(subject_id=subject, reason="court order"), metadata=ENROLLER
        )
        assert response.deleted_records == 2
        for record_id in records:
            assert not await object_stored(store.bucket, f"gallery/{record_id}"), (
                f"the photo of {record_id} outlived the expunge"
            )
        assert response.unreadable_photos == 1
        assert await object_stored(store.bucket, f"gallery/{orphan}"), "a photo no subject can be told for was deleted"

        async def audited() -> bool:
            found = await audit_records(stack, kinds=["subject.deleted"])
            details = [json.loads(r.event.details_json) for r in found]
            return any(
                d.get("subject_id") == subject
                and d.get("photos_deleted") == 2
                and d.get("photos_unreadable") == 1
                and d.get("photos_unreadable_names") == [f"gallery/{orphan}"]
                for d in details
            )

        await eventually(audited)
    finally:
        await store.bucket.delete(f"gallery/{orphan}")


async def test_a_gallery_admin_reads_a_record_photo_for_re_embedding_and_nobody_else_does(
    gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, enrolled: gateway_pb2.EnrollResponse
) -> None:
    request = gateway_pb2.GetRecordPhotoRequest(record_id=enrolled.record_id)
    photo = await gateway.GetRecordPhoto(request, metadata=ENROLLER)
    assert photo.image == (samples / "obama.jpg").read_bytes() and photo.subject_id == "obama"
    for metadata in (RITA, AUDITOR, INVESTIGATOR):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway.GetRecordPhoto(request, metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for bad, code in (
        ("../../etc", grpc.StatusCode.INVALID_ARGUMENT),
        ("0" * 8 + "-0000-0000-0000-" + "0" * 12, grpc.StatusCode.NOT_FOUND),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway.GetRecordPhoto(gateway_pb2.GetRecordPhotoRequest(record_id=bad), metadata=ENROLLER)
        assert refused.value.code() == code


async def test_a_case_page_shows_each_search_with_its_review_trail_to_supervisors_and_auditors(
    stack: InProcessStack, gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, enrolled: object
) -> None:
    search_id = await search_as(gateway, samples, INVESTIGATOR, "PHOTO-CASE-1")
    await review(gateway, RITA, search_id, gateway_pb2.DECISION_CONFIRM, "same scar")
    await review(gateway, ROB, search_id, gateway_pb2.DECISION_REJECT, "ears differ")
    for metadata in (SUE, AUDITOR):
        case = await gateway.GetCase(gateway_pb2.GetCaseRequest(case_number="PHOTO-CASE-1"), metadata=metadata)
        [shown] = case.searches
        assert shown.search_id == search_id
        top = shown.candidates[0]
        assert top.status == gateway_pb2.CANDIDATE_STATUS_DISPUTED
        assert [(r.reviewer, r.notes) for r in top.reviews] == [("rita", "same scar"), ("rob", "ears differ")]
    for metadata in (RITA, INVESTIGATOR):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway.GetCase(gateway_pb2.GetCaseRequest(case_number="PHOTO-CASE-1"), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    async def audited() -> bool:
        records = await audit_records(stack, kinds=["case.viewed", "case.view.refused"], case_number="PHOTO-CASE-1")
        return {r.event.actor for r in records} == {"sue", "audrey", "rita", "ivy"}

    await eventually(audited)


async def test_a_probe_is_kept_until_its_candidates_are_decided_plus_the_policy_days_then_swept_and_audited(
    stack: InProcessStack,
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    samples: Path,
    enrolled: object,
    store: PhotoStore,
    restore_policy: None,  # noqa: F811 - the fixture
) -> None:
    await stack.use_policy(policy_with(retention={"keep_probes": True, "probe_days_after_decision": 0}))
    decided = await search_as(gateway, samples, INVESTIGATOR, "RET-1")
    waiting = await search_as(gateway, samples, INVESTIGATOR, "RET-1")
    stored = await raw_object(stack, f"probe/{decided}")
    assert (samples / "obama2.jpg").read_bytes()[1000:1064] not in stored
    without = await gateway.GetSearch(gateway_pb2.GetSearchRequest(search_id=decided), metadata=RITA)
    assert not without.probe_image  # only when asked for: the desk shows it through GetSearchPhoto
    request = gateway_pb2.GetSearchRequest(search_id=decided, include_probe=True)
    shown = await gateway.GetSearch(request, metadata=RITA)
    assert shown.probe_image == (samples / "obama2.jpg").read_bytes()

    async def both_looks_audited() -> bool:
        records = await audit_records(stack, kinds=["search.viewed"], case_number="RET-1")
        looks = [json.loads(r.event.details_json) for r in records if r.event.actor == "rita"]
        return [look["probe_shown"] for look in looks if look["search_id"] == decided] == [False, True]

    await eventually(both_looks_audited)
    for rank in range(1, shown.candidate_count + 1):
        for reviewer in (RITA, ROB):
            await look_at_both(gateway, reviewer, decided, rank)
            request = gateway_pb2.SubmitReviewRequest(
                search_id=decided, rank=rank, decision=gateway_pb2.DECISION_REJECT, notes="not him", features=["nose"]
            )
            await gateway.SubmitReview(request, metadata=reviewer)

    async def swept() -> bool:
        records = await audit_records(stack, kinds=["probe.deleted"])
        reasons = {json.loads(r.event.details_json)["search_id"]: r for r in records}
        return decided in reasons and await store.header("probe", decided) is None

    await eventually(swept)
    # The other search's candidates still wait for review: its probe stays.
    assert await store.header("probe", waiting) is not None

    # A policy that keeps no probes sweeps the rest.
    await stack.use_policy(policy_with(retention={"keep_probes": False}))
    kept_none = await gateway.Search(
        gateway_pb2.SearchRequest(
            probe_image=(samples / "obama2.jpg").read_bytes(), case_number="RET-1", purpose="investigation"
        ),
        metadata=INVESTIGATOR,
    )
    assert await store.header("probe", kept_none.search_id) is None

    async def all_swept() -> bool:
        return await store.header("probe", waiting) is None

    await eventually(all_swept)
    records = await audit_records(stack, kinds=["probe.deleted"])
    why = {json.loads(r.event.details_json)["search_id"]: json.loads(r.event.details_json)["reason"] for r in records}
    assert why[waiting] == "the policy keeps no probes" and why[decided].startswith("decided ")


async def test_an_enrolments_metadata_is_kept_sealed_with_its_photo_and_refused_when_altered(
    stack: InProcessStack, samples: Path, store: PhotoStore
) -> None:
    """The metadata a reviewer reads beside a candidate (source, booking details) is stored sealed
    in the photo's header, readable only with the photo key, and bound to that photo."""
    key = str(uuid.uuid4())
    image = (samples / "obama3.jpg").read_bytes()
    header = PhotoHeader("gallery", key, hashlib.sha256(image).hexdigest(), subject_id="B-1", origin="enroll")
    kept = {"source": "county booking", "booked_at": "2026-11-02"}
    await store.put(header, image, metadata=kept)
    try:
        got = await store.get("gallery", key)
        assert got is not None and got.metadata == kept and dict(got.message().metadata) == kept
        stored = await store.header("gallery", key)
        assert stored is not None and stored.metadata_sealed and "county booking" not in stored.encoded()
        # Moved onto another photo, the sealed metadata does not open.
        other = str(uuid.uuid4())
        moved = dataclasses.replace(header, key=other, metadata_sealed=stored.metadata_sealed)
        await store.put(moved, image)
        with pytest.raises(PreconditionFailed, match="metadata"):
            await store.get("gallery", other)
        await store.delete("gallery", other)
    finally:
        await store.delete("gallery", key)


async def test_a_search_refused_after_its_probe_was_stored_leaves_no_probe(
    stack: InProcessStack,
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    samples: Path,
    enrolled: object,
    store: PhotoStore,
    restore_policy: None,  # noqa: F811 - the fixture
) -> None:
    """The probe is stored beside embedding and matching; a search refused after that (here by the
    daily quota, answered beside detection) must not leave its probe behind."""
    await stack.use_policy(policy_with(retention={"keep_probes": True}, quotas={"searches_per_user_per_day": 1}))
    _, metadata = fresh_investigator()
    before = {header.key for header in (await store.read_headers("probe"))[0]}
    first = await gateway.Search(probe_request(samples, "RET-2"), metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.Search(probe_request(samples, "RET-2"), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert {header.key for header in (await store.read_headers("probe"))[0]} - before == {first.search_id}


async def test_a_probe_whose_search_was_never_recorded_is_swept_an_hour_after_it_was_stored_not_weeks(
    stack: InProcessStack,
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    samples: Path,
    enrolled: object,
    store: PhotoStore,
    restore_policy: None,  # noqa: F811 - the fixture
) -> None:
    """A gateway killed between storing a search's probe and recording the search (or one whose
    chain question went unanswered) leaves a probe the chain knows nothing of: a photo of someone
    no search on the record accounts for. The sweep deletes it once its search can no longer be on
    its way (an hour), not when a decided search's days would have run out."""
    await stack.use_policy(policy_with(retention={"keep_probes": True, "probe_days_after_decision": 30}))
    two_hours_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).isoformat()
    image = (samples / "obama2.jpg").read_bytes()
    orphan = PhotoHeader("probe", str(uuid.uuid4()), hashlib.sha256(image).hexdigest(), two_hours_ago, origin="search")
    just_stored = PhotoHeader("probe", str(uuid.uuid4()), orphan.sha256, origin="search")
    for header in (orphan, just_stored):
        await store.put(header, image)
    # A recorded search's probe, stored as long ago, stays for its reviewers.
    recorded = await search_as(gateway, samples, INVESTIGATOR, "RET-3")
    kept = await store.header("probe", recorded)
    assert kept is not None
    await store.put(dataclasses.replace(kept, stored_at=two_hours_ago), image)

    async def orphan_swept() -> bool:
        return await store.header("probe", orphan.key) is None

    await eventually(orphan_swept, what="the probe of a search never recorded was kept")
    # Recorded before the probe went; the chain holds it once the audit service has read it.
    reasons: list[str] = []

    async def deletion_recorded() -> bool:
        records = await audit_records(stack, kinds=["probe.deleted"])
        reasons[:] = [json.loads(r.event.details_json)["reason"] for r in records if orphan.key in r.event.details_json]
        return bool(reasons)

    await eventually(deletion_recorded, what="the orphaned probe's deletion on the chain")
    assert reasons == ["its search was never recorded"]
    await asyncio.sleep(3)  # rounds of the sweep (every second here) after the one that took it
    assert await store.header("probe", recorded) is not None, "a recorded search's probe was swept"
    assert await store.header("probe", just_stored.key) is not None, "a probe whose search may be on its way was swept"


async def sweep_reads(stack: InProcessStack) -> list[dict[str, Any]]:
    """What the gateway's sweeps asked the chain, oldest first: each read is a record on it."""
    records = await audit_records(stack, kinds=["audit.queried"], actor="system")
    return [json.loads(record.event.details_json)["asked"] for record in records]


def asks_about(asked: dict[str, Any], search_id: str) -> bool:
    """Whether a read of the chain asked for ``search_id``'s record, alone or among others."""
    return asked["event_id"] == search_id or search_id in asked.get("event_ids", ())


async def searched_long_ago(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    samples: Path,
    store: PhotoStore,
    case: str,
    age: dt.timedelta,
    count: int,
) -> list[str]:
    """``count`` searches made now (their candidate awaits review) whose probes are stored as if
    ``age`` ago."""
    image = (samples / "obama2.jpg").read_bytes()
    searched = [await search_as(gateway, samples, INVESTIGATOR, f"{case}-{n}") for n in range(count)]
    stored_at = (dt.datetime.now(dt.UTC) - age).isoformat()
    for search_id in searched:
        header = await store.header("probe", search_id)
        assert header is not None
        await store.put(dataclasses.replace(header, stored_at=stored_at), image)
    return searched


async def test_the_sweep_reads_a_kept_probes_search_once_not_every_round(
    stack: InProcessStack,
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    samples: Path,
    enrolled: object,
    store: PhotoStore,
    restore_policy: None,  # noqa: F811 - the fixture
) -> None:
    """A probe past its policy days is kept until its search was decided and those days have run
    since. Whether they have is read from the chain, and every read of the chain is itself a
    record on it: read every round (hourly), each such probe would add 24 records a day, and the
    reviews of its whole case read with each, for as long as it is kept (two weeks for a search
    decided when its review window closes). What is known of its decision is remembered: no
    decision can come earlier than the moment it was read."""
    await stack.use_policy(policy_with(retention={"keep_probes": True, "probe_days_after_decision": 30}))
    [searched] = await searched_long_ago(gateway, samples, store, "RET-4", dt.timedelta(days=31), 1)

    async def reads() -> int:
        return sum(1 for asked in await sweep_reads(stack) if asks_about(asked, searched))

    async def read_once() -> bool:
        return await reads() > 0

    await eventually(read_once, what="the sweep reading the kept probe's search")
    first = await reads()
    await asyncio.sleep(4)  # four rounds of the sweep (every second here)
    assert await store.header("probe", searched) is not None, "a probe whose search awaits review was swept"
    again = await reads() - first
    assert again <= 1, f"four more rounds read the kept probe's search {again} more times"


def read_together(asked: dict[str, Any], searched: list[str], how: str) -> bool:
    """Whether a read of the chain read ``searched`` together as ``how`` says: "since <kind>" (every
    record of that kind since a time), or "by their ids"."""
    if how == "by their ids":
        return set(searched) <= set(asked.get("event_ids", ()))
    return bool(asked["since"]) and how.removeprefix("since ") in asked["kinds"]


@pytest.mark.parametrize(
    ("age", "together_from", "how"),
    [
        (dt.timedelta(hours=2), 3, "since search.completed"),
        (dt.timedelta(days=31), 3, "since review.submitted"),
        (dt.timedelta(days=31), retention.READ_TOGETHER_FROM, "by their ids"),
    ],
    ids=["an-hour-old", "past-their-days", "a-few-past-their-days"],
)
async def test_the_sweep_reads_the_searches_of_many_probes_together_not_one_by_one(
    stack: InProcessStack,
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    samples: Path,
    enrolled: object,
    store: PhotoStore,
    restore_policy: None,  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
    age: dt.timedelta,
    together_from: int,
    how: str,
) -> None:
    """Once a probe is an hour old, the sweep asks whether its search is on the chain (a probe no
    search accounts for goes); once it is past its policy days, whether its search was decided
    those days ago (its search and its case's reviews). Each read is a record on the chain, and a
    restarted gateway asks about every probe at once: under the default policy 30,000 of each
    kind at 1,000 searches a day, each replica, each restart. The probes a round asks about are
    read together in one paged read of what was recorded since: an hour old, from two of them;
    past their days, from READ_TOGETHER_FROM (100; 3 here in two cases, set in the test stack's
    gateway, which runs in this process). Fewer past their days (42 an hour at 1,000 searches a
    day) are read by their ids: two reads a round, not two a probe (two to four records of the
    system reading itself for every search made)."""
    monkeypatch.setattr(retention, "READ_TOGETHER_FROM", together_from)
    await stack.use_policy(policy_with(retention={"keep_probes": True, "probe_days_after_decision": 30}))
    before = len(await sweep_reads(stack))
    searched = await searched_long_ago(gateway, samples, store, f"RET-5-{age.days}-{together_from}", age, 3)

    async def read_so() -> bool:
        return any(read_together(asked, searched, how) for asked in await sweep_reads(stack))

    await asyncio.sleep(3)  # three rounds of the sweep (every second here)
    one_by_one = [asked for asked in (await sweep_reads(stack))[before:] if asked["event_id"] in searched]
    assert not one_by_one, f"{len(one_by_one)} reads, one a probe, of the searches of 3 probes {age} old"
    await eventually(read_so, what=f"the searches of the probes {age} old read together ({how})")
    for search_id in searched:  # their candidates await review, within the review window
        assert await store.header("probe", search_id) is not None, "a probe whose search awaits review was swept"

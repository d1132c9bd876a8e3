"""Candor's main job through the running services: enrol, search, refuse, audit, trace."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from pathlib import Path

import grpc
import pytest
from PIL import Image

from candor.audit.v1 import audit_pb2, audit_pb2_grpc
from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.integration.conftest import InProcessStack, as_user
from tests.unit.test_decoding import giant_png
from tests.waiting import eventually

INVESTIGATOR = as_user("investigator-token")
ENROLLER = as_user("enroller-token")
AUDITOR = as_user("auditor-token")
NOTICE = "investigative lead only: not a basis for arrest"

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def audit_records(stack: InProcessStack, **filters: object) -> list[audit_pb2.AuditRecord]:
    token = (stack.root / "secrets" / "service-token").read_text().strip()
    async with grpc.aio.insecure_channel(stack.addresses["audit"]) as channel:
        reply = await audit_pb2_grpc.AuditServiceStub(channel).Query(
            audit_pb2.QueryRequest(**filters), metadata=(("authorization", f"Bearer {token}"),)
        )
    return list(reply.records)


async def search(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    image: bytes,
    case: str = "CASE-2026-001",
    purpose: str = "investigation",
) -> gateway_pb2.SearchResponse:
    request = gateway_pb2.SearchRequest(probe_image=image, case_number=case, purpose=purpose)
    return await gateway.Search(request, metadata=INVESTIGATOR)


@pytest.fixture(scope="module")
async def enrolled(gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path) -> None:
    """A gallery of obama.jpg and the six faces of t1.jpg; Biden is not in it."""
    await gateway.Enroll(
        gateway_pb2.EnrollRequest(image=(samples / "obama.jpg").read_bytes(), subject_id="obama"), metadata=ENROLLER
    )
    group = (samples / "t1.jpg").read_bytes()
    for index in range(6):
        await gateway.Enroll(
            gateway_pb2.EnrollRequest(image=group, subject_id=f"t1-{index}", face_index=index), metadata=ENROLLER
        )


@pytest.mark.parametrize("probe", ["obama2.jpg", "obama3.jpg"])
async def test_obama_probe_returns_obama_at_rank_one_under_threshold(
    gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, enrolled: None, probe: str
) -> None:
    found = await search(gateway, (samples / probe).read_bytes())
    assert found.candidates[0].subject_id == "obama"
    assert found.candidates[0].rank == 1
    assert found.candidates[0].distance < found.model.threshold
    assert found.model.id == "sface" and found.model.metric == "cosine"
    assert len(found.model.calibration_id) == 64  # the threshold comes from a calibration record
    assert found.notice == NOTICE


async def test_probe_of_someone_not_enrolled_returns_no_candidate(
    gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, enrolled: None
) -> None:
    found = await search(gateway, (samples / "biden.jpg").read_bytes())
    assert list(found.candidates) == []
    assert found.notice == NOTICE


async def test_group_photo_yields_six_faces(gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path) -> None:
    detected = await gateway.DetectFaces(
        gateway_pb2.DetectFacesRequest(image=(samples / "t1.jpg").read_bytes()), metadata=INVESTIGATOR
    )
    assert len(detected.faces) == 6
    assert all(not face.chip.rgb for face in detected.faces)


async def test_reenrolling_the_same_photo_changes_nothing(
    gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, enrolled: None
) -> None:
    again = await gateway.Enroll(
        gateway_pb2.EnrollRequest(image=(samples / "obama.jpg").read_bytes(), subject_id="obama"), metadata=ENROLLER
    )
    assert not again.created


async def test_ten_megabyte_photo_is_searched(
    gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, enrolled: None
) -> None:
    photo = Image.open(samples / "obama3.jpg")
    buffer = io.BytesIO()
    photo.resize((5800 * photo.width // photo.height, 5800), Image.BICUBIC).save(
        buffer, "JPEG", quality=100, subsampling=0
    )
    data = buffer.getvalue()
    assert len(data) > 10_000_000
    found = await search(gateway, data)
    assert found.candidates[0].subject_id == "obama"


def truncated_jpeg(samples: Path) -> bytes:
    data = (samples / "obama.jpg").read_bytes()
    return data[: len(data) // 2]


def faceless_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (90, 110, 130)).save(buffer, "PNG")
    return buffer.getvalue()


BAD_PROBES = {
    "empty bytes": (lambda s: b"", grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    "truncated jpeg": (truncated_jpeg, grpc.StatusCode.INVALID_ARGUMENT, "truncated"),
    # Cut inside its header (JFIF and quantisation tables), before any pixel: Pillow fails in open().
    "jpeg cut in its header": (
        lambda s: (s / "obama.jpg").read_bytes()[:200],
        grpc.StatusCode.INVALID_ARGUMENT,
        "header is truncated",
    ),
    "text file": (
        lambda s: b"Suspect description: tall, dark coat.\n" * 10,
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a readable",
    ),
    "20000x20000 png": (lambda s: giant_png(), grpc.StatusCode.RESOURCE_EXHAUSTED, "MP"),
    "photo with no face": (lambda s: faceless_png(), grpc.StatusCode.INVALID_ARGUMENT, "no face"),
}


@pytest.mark.parametrize("name", list(BAD_PROBES))
async def test_bad_probe_is_refused_cleanly_audited_and_the_stack_keeps_serving(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, enrolled: None, name: str
) -> None:
    make, code, text = BAD_PROBES[name]
    case = f"BAD-{name.replace(' ', '-')}"
    probe = make(samples)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await search(gateway, probe, case=case)
    assert error.value.code() == code
    assert text in error.value.details()
    # The refusal names the probe by its hash (none for empty bytes), never by its content.
    probe_hash = hashlib.sha256(probe).hexdigest() if probe else None

    async def refusal_recorded() -> bool:
        records = await audit_records(stack, case_number=case)
        return any(
            r.event.kind == "search.refused"
            and json.loads(r.event.details_json)["code"] == code.name
            and json.loads(r.event.details_json).get("image_sha256") == probe_hash
            for r in records
        )

    await eventually(refusal_recorded)
    assert (await search(gateway, (samples / "obama2.jpg").read_bytes())).candidates[0].subject_id == "obama"


@pytest.mark.parametrize(
    ("case", "purpose", "metadata", "code", "limit"),
    [
        ("CASE-P1", "curiosity", INVESTIGATOR, grpc.StatusCode.PERMISSION_DENIED, 0),
        ("", "investigation", INVESTIGATOR, grpc.StatusCode.INVALID_ARGUMENT, 0),
        ("CASE-P3", "", INVESTIGATOR, grpc.StatusCode.INVALID_ARGUMENT, 0),
        ("CASE-P4", "investigation", as_user("stolen-token"), grpc.StatusCode.UNAUTHENTICATED, 0),
        ("CASE-P5", "investigation", (), grpc.StatusCode.UNAUTHENTICATED, 0),
        ("CASE-P6", "investigation", AUDITOR, grpc.StatusCode.PERMISSION_DENIED, 0),
        # An oversized candidate list is refused, not cut (the gateway's limit is 50 here).
        ("CASE-P7", "investigation", INVESTIGATOR, grpc.StatusCode.PERMISSION_DENIED, 51),
    ],
)
async def test_search_outside_policy_is_refused_and_audited(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    stack: InProcessStack,
    samples: Path,
    case: str,
    purpose: str,
    metadata: tuple[tuple[str, str], ...],
    code: grpc.StatusCode,
    limit: int,
) -> None:
    request = gateway_pb2.SearchRequest(
        probe_image=(samples / "obama2.jpg").read_bytes(), case_number=case, purpose=purpose, max_candidates=limit
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.Search(request, metadata=metadata)
    assert error.value.code() == code

    async def refusal_recorded() -> bool:
        filters = {"case_number": case} if case else {}
        records = await audit_records(stack, kinds=["search.refused"], **filters)
        return any(
            r.event.kind == "search.refused"
            and r.event.purpose == purpose
            and json.loads(r.event.details_json)["code"] == code.name
            for r in records
        )

    await eventually(refusal_recorded)


async def test_search_is_audited_with_hash_candidates_model_and_trace(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, enrolled: None
) -> None:
    probe = (samples / "obama3.jpg").read_bytes()
    found = await search(gateway, probe, case="CASE-AUDIT-1")

    async def landed() -> bool:
        return any(r.event.event_id == found.search_id for r in await audit_records(stack, case_number="CASE-AUDIT-1"))

    await eventually(landed)
    record = next(
        r for r in await audit_records(stack, case_number="CASE-AUDIT-1") if r.event.event_id == found.search_id
    )
    details = json.loads(record.event.details_json)
    assert record.event.actor == "ivy" and record.event.purpose == "investigation"
    assert record.event.trace_id == found.trace_id
    assert details["probe_sha256"] == found.probe_sha256
    assert details["candidates"][0]["subject_id"] == "obama"
    assert details["model"]["id"] == "sface"
    assert details["threshold"] == pytest.approx(found.model.threshold)
    assert details["calibration_id"] == found.model.calibration_id
    # Never the image: the record holds no large blob.
    assert len(record.event.details_json) < 4000


async def test_the_calibration_a_search_runs_under_is_on_the_chain_with_its_evidence_before_it(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, enrolled: None
) -> None:
    # The test stack's calibration was written into the gateway's registry, as one made where no
    # stack was reachable is copied there: no operator recorded it. The oversight report must still
    # find, on the chain, the figures of each calibration searches ran under.
    found = [await search(gateway, (samples / "obama3.jpg").read_bytes(), case="CASE-CAL-1") for _ in range(2)]
    calibration = found[0].model.calibration_id
    assert calibration and found[1].model.calibration_id == calibration

    async def landed() -> bool:
        return len(await audit_records(stack, case_number="CASE-CAL-1", kinds=["search.completed"])) == 2

    await eventually(landed)
    first_search = min(r.sequence for r in await audit_records(stack, kinds=["search.completed"]))
    in_use = [r for r in await audit_records(stack, kinds=["calibration.in_use"]) if calibration in r.event.event_id]
    assert len(in_use) == 1, f"the calibration in use is on the chain {len(in_use)} times"
    assert in_use[0].sequence < first_search, "the calibration was recorded after a search ran under it"
    evidence = json.loads(in_use[0].event.details_json)
    assert evidence["calibration_id"] == calibration
    assert (evidence["model"], evidence["version"]) == (found[0].model.id, found[0].model.version)
    assert {"per_group", "target_fmr", "dataset_fingerprint", "rule"} <= set(evidence)


async def test_search_while_audit_is_down_lands_in_the_chain_after_restart(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, enrolled: None
) -> None:
    await stack.stop("audit")
    found = await search(gateway, (samples / "obama2.jpg").read_bytes(), case="CASE-AUDIT-DOWN")
    assert found.candidates[0].subject_id == "obama"
    await stack.start("audit")

    async def landed() -> bool:
        return any(
            r.event.event_id == found.search_id for r in await audit_records(stack, case_number="CASE-AUDIT-DOWN")
        )

    await eventually(landed)
    verified = await gateway.VerifyAudit(gateway_pb2.VerifyAuditRequest(), metadata=AUDITOR)
    assert verified.ok


async def test_delete_subject_removes_it_from_search_and_is_audited(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, enrolled: None
) -> None:
    await gateway.Enroll(
        gateway_pb2.EnrollRequest(image=(samples / "biden.jpg").read_bytes(), subject_id="biden-del"), metadata=ENROLLER
    )
    assert (await search(gateway, (samples / "biden.jpg").read_bytes())).candidates[0].subject_id == "biden-del"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.DeleteSubject(gateway_pb2.DeleteSubjectRequest(subject_id="biden-del"), metadata=ENROLLER)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    deleted = await gateway.DeleteSubject(
        gateway_pb2.DeleteSubjectRequest(subject_id="biden-del", reason="court order 42"), metadata=ENROLLER
    )
    assert deleted.deleted_records == 1
    assert list((await search(gateway, (samples / "biden.jpg").read_bytes())).candidates) == []

    async def audited() -> bool:
        return any(
            r.event.kind == "subject.deleted" and json.loads(r.event.details_json)["subject_id"] == "biden-del"
            for r in await audit_records(stack, kinds=["subject.deleted"])
        )

    await eventually(audited)


async def test_oversized_requests_are_refused_with_resource_exhausted(
    gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path, enrolled: None
) -> None:
    over_policy = b"\xff\xd8" + bytes(13 * 1024 * 1024)  # over the gateway's 12 MiB image limit
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await search(gateway, over_policy, case="CASE-BIG-1")
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in error.value.details()
    over_transport = bytes(17 * 1024 * 1024)  # over the 16 MiB message limit itself
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await search(gateway, over_transport, case="CASE-BIG-2")
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (await search(gateway, (samples / "obama2.jpg").read_bytes())).candidates[0].subject_id == "obama"


async def test_enrolment_without_a_subject_id_is_invalid(
    gateway: gateway_pb2_grpc.GatewayServiceStub, samples: Path
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.Enroll(gateway_pb2.EnrollRequest(image=(samples / "obama.jpg").read_bytes()), metadata=ENROLLER)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.Enroll(
            gateway_pb2.EnrollRequest(image=(samples / "obama.jpg").read_bytes(), subject_id="bad id; drop"),
            metadata=ENROLLER,
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.Enroll(
            gateway_pb2.EnrollRequest(image=(samples / "obama.jpg").read_bytes(), subject_id="ok-1"),
            metadata=INVESTIGATOR,
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_denied_face_listing_and_audit_verification_are_audited(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.DetectFaces(
            gateway_pb2.DetectFacesRequest(image=(samples / "t1.jpg").read_bytes()), metadata=AUDITOR
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.VerifyAudit(gateway_pb2.VerifyAuditRequest(), metadata=INVESTIGATOR)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED

    async def both_audited() -> bool:
        refused = await audit_records(stack, kinds=["detect.refused", "verify_audit.refused"])
        kinds = {(r.event.kind, r.event.actor) for r in refused}
        return {("detect.refused", "audrey"), ("verify_audit.refused", "ivy")} <= kinds

    await eventually(both_audited)


async def test_single_record_delete_removes_one_photo_and_keeps_the_others(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, enrolled: None
) -> None:
    biden = (samples / "biden.jpg").read_bytes()
    first = await gateway.Enroll(gateway_pb2.EnrollRequest(image=biden, subject_id="rec-subject"), metadata=ENROLLER)
    second = await gateway.Enroll(
        gateway_pb2.EnrollRequest(image=(samples / "obama_partial_face.jpg").read_bytes(), subject_id="rec-subject"),
        metadata=ENROLLER,
    )
    assert first.record_id != second.record_id
    assert (await search(gateway, biden)).candidates[0].record_id == first.record_id

    gone = await gateway.DeleteRecord(
        gateway_pb2.DeleteRecordRequest(record_id=first.record_id, reason="wrong person enrolled"), metadata=ENROLLER
    )
    assert gone.deleted and gone.subject_id == "rec-subject"
    assert all(c.record_id != first.record_id for c in (await search(gateway, biden)).candidates)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.DeleteRecord(
            gateway_pb2.DeleteRecordRequest(record_id=first.record_id, reason="again"), metadata=ENROLLER
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND

    async def audited() -> bool:
        records = await audit_records(stack, kinds=["record.deleted", "delete_record.refused"])
        kinds = {r.event.kind for r in records if first.record_id in r.event.details_json}
        return {"record.deleted", "delete_record.refused"} <= kinds

    await eventually(audited)
    # The subject's other photo is still enrolled and still found.
    partial = await search(gateway, (samples / "obama_partial_face.jpg").read_bytes())
    assert second.record_id in [c.record_id for c in partial.candidates]
    # An obama face: left enrolled, it would be a candidate for the other modules' obama probes.
    request = gateway_pb2.DeleteSubjectRequest(subject_id="rec-subject", reason="test over")
    await gateway.DeleteSubject(request, metadata=ENROLLER)


async def test_search_while_the_detector_is_down_is_unavailable_audited_and_recovers(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, enrolled: None
) -> None:
    await stack.stop("detector")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await search(gateway, (samples / "obama2.jpg").read_bytes(), case="CASE-DOWN-1")
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no detector of sface, the gallery's model, is answering" in error.value.details()
    finally:
        await stack.start("detector")

    async def refusal_recorded() -> bool:
        records = await audit_records(stack, case_number="CASE-DOWN-1")
        return any(json.loads(r.event.details_json).get("code") == "UNAVAILABLE" for r in records)

    await eventually(refusal_recorded)
    assert (await search(gateway, (samples / "obama2.jpg").read_bytes())).candidates[0].subject_id == "obama"


async def test_parallel_enrolments_are_each_stored_once_and_found(
    gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path, enrolled: None
) -> None:
    """The matcher writes enrolments that arrive together in one group: each caller still gets its
    own record, and the same photo sent four times at once is stored once."""
    try:
        await enrol_in_parallel(gateway, stack, samples)
    finally:
        # obama2.jpg is the other modules' probe: left enrolled, it would be their first candidate.
        for subject in [f"par-{index}" for index in range(6)] + ["par-obama"]:
            request = gateway_pb2.DeleteSubjectRequest(subject_id=subject, reason="test over")
            await gateway.DeleteSubject(request, metadata=ENROLLER)


async def enrol_in_parallel(gateway: gateway_pb2_grpc.GatewayServiceStub, stack: InProcessStack, samples: Path) -> None:
    """Six faces of one photo and one photo four times, enrolled at once, checked as stored once each."""
    group = (samples / "t1.jpg").read_bytes()
    repeated = (samples / "obama2.jpg").read_bytes()
    calls = [
        gateway.Enroll(
            gateway_pb2.EnrollRequest(image=group, subject_id=f"par-{index}", face_index=index), metadata=ENROLLER
        )
        for index in range(6)
    ] + [
        gateway.Enroll(gateway_pb2.EnrollRequest(image=repeated, subject_id="par-obama"), metadata=ENROLLER)
        for _ in range(4)
    ]
    answers = await asyncio.gather(*calls)
    faces, repeats = answers[:6], answers[6:]
    assert all(answer.created for answer in faces)
    assert len({answer.record_id for answer in faces}) == 6
    assert len({answer.record_id for answer in repeats}) == 1
    assert sum(answer.created for answer in repeats) == 1
    found = await search(gateway, repeated)
    assert [c.record_id for c in found.candidates if c.subject_id == "par-obama"] == [repeats[0].record_id]

    async def audited() -> bool:
        records = await audit_records(stack, kinds=["matcher.enrolled"])
        mine = [json.loads(r.event.details_json) for r in records if '"par-' in r.event.details_json]
        return len(mine) == 10 and sum(d["created"] for d in mine if d["subject_id"] == "par-obama") == 1

    await eventually(audited)

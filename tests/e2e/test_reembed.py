"""``candor gallery reembed``: the gallery rebuilt with another model beside the running one, then
switched over in one step, through the process stack.

The gallery starts on dlib's ResNet (real model, real photos), as a gallery made before SFace
became the default did. The second model is the default one, SFace (real model), run by a second
detector and embedder beside the dlib ones: the move every such gallery makes. It shows which
collection answers searches and when, what is carried over, what is left out and why, and what the
audit log says.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from candor.common.v1 import common_pb2
from candor.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from candor.matcher.v1 import matcher_pb2
from candor_cli import LocalStack
from candor_client import GatewayClient
from candor_gateway.photos import PhotoStore
from candor_kit import subjects
from candor_kit.aes_keys import read_aes_key
from candor_matcher.gallery import record_id_for
from tests.e2e.test_gallery_import import gallery_records
from tests.e2e.test_stack_cli import candor, search_json, searching, wait_for_audit

pytestmark = pytest.mark.e2e

NEW = "sface"
OLD = "dlib-resnet-v1"
#: The engines of a gallery made before SFace became the default: dlib's ResNet on YuNet's faces.
DLIB_ENGINES = {"CANDOR_DETECTOR_ENGINE": "yunet", "CANDOR_EMBEDDER_ENGINE": "dlib"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("reembed-stack"), extra_env=DLIB_ENGINES)
    stack.up()
    yield stack
    stack.down()


@pytest.fixture(scope="module")
def source(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three subjects, four photos, as an import folder."""
    root = tmp_path_factory.mktemp("booking")
    for subject, photo in (("obama", "obama.jpg"), ("obama", "obama2.jpg"), ("biden", "biden.jpg")):
        (root / subject).mkdir(exist_ok=True)
        shutil.copyfile(samples / photo, root / subject / photo)
    return root


async def _forget_photo(stack: LocalStack, record_id: str) -> None:
    """Delete a record's photo from the store, as the gateway can."""
    bus = await stack.nats_login("gateway").connect("test-forget-photo")
    try:
        photos = PhotoStore(read_aes_key(stack.data / "secrets" / "photo-key", "photo key"))
        await photos.open(bus)
        assert await photos.delete("gallery", record_id)
    finally:
        await bus.close()


def client_models(stack: LocalStack) -> matcher_pb2.GalleryModels:
    """The gallery's model record, as the gateway answers it."""
    state = stack.state()
    assert state is not None
    with GatewayClient(state.gateway, stack.token()) as client:
        return client.gallery_models()


def _begin(target: common_pb2.ModelRef) -> matcher_pb2.BeginReembedRequest:
    return matcher_pb2.BeginReembedRequest(target=target, origin=common_pb2.Origin(actor="local-operator"))


def _switch(model_id: str, reason: str) -> matcher_pb2.SwitchModelRequest:
    return matcher_pb2.SwitchModelRequest(
        target_model_id=model_id, reason=reason, origin=common_pb2.Origin(actor="local-operator")
    )


async def _as_a_gateway_that_dies(stack: LocalStack, subject: str, request: Message) -> None:
    """Ask the matcher what a gateway asks, with the gateway's credentials, and record nothing
    after: a gateway killed once the matcher has answered."""
    bus = await stack.nats_login("gateway").connect("test-dying-gateway")
    try:
        await bus.request(subject, request, matcher_pb2.GalleryModels, 60.0)
    finally:
        await bus.close()


#: The audit records of a move to another model, and the field of each naming the model moved to.
MOVES = {
    "matcher.reembed_begun": "target",
    "gallery.reembed_started": "target",
    "matcher.model_switched": "active",
    "gallery.model_switched": "active",
}


def _audit_details(stack: LocalStack, kind: str) -> list[dict[str, Any]]:
    with sqlite3.connect(stack.data / "audit" / "audit.db") as db:
        rows = db.execute("SELECT details_json FROM audit_record WHERE kind = ?", (kind,)).fetchall()
    return [json.loads(details) for (details,) in rows]


def _model_id(named: str | dict[str, str]) -> str:
    """A model's id, as the matcher's records name it (the id) or the gateway's (id and version)."""
    return named["id"] if isinstance(named, dict) else named


def _models(stack: LocalStack) -> str:
    return candor(stack, "gallery", "models").stdout


def test_reembed_builds_beside_the_active_model_and_switches_in_one_step(
    stack: LocalStack, source: Path, samples: Path, tmp_path: Path
) -> None:
    # A gallery on dlib: an import, one photo enrolled by itself (its path kept), one face of a
    # group photo, and one enrolled through the API without any reference, which cannot be
    # re-embedded.
    candor(stack, "gallery", "import", str(source), "--quiet")
    candor(stack, "enroll", str(samples / "obama3.jpg"), "--subject", "obama")
    candor(stack, "enroll", str(samples / "t1.jpg"), "--subject", "t1-person-3", "--face", "3")
    state = stack.state()
    assert state is not None
    with grpc.insecure_channel(state.gateway) as channel:
        bare = gateway_pb2.EnrollRequest(image=(samples / "t1.jpg").read_bytes(), subject_id="crowd", face_index=0)
        token = (("authorization", f"Bearer {stack.token()}"),)
        unreferenced = gateway_pb2_grpc.GatewayServiceStub(channel).Enroll(bare, metadata=token).record_id
    assert f"active             {OLD} 1.0 (128-d euclidean)" in _models(stack)
    # Photos come from the photo store: an imported photo's file may be gone. A record enrolled
    # before the store kept photos has none there: the bare one's is taken out to stand for it.
    (source / "obama" / "obama.jpg").unlink()
    asyncio.run(_forget_photo(stack, unreferenced))

    # Without the new model's services there is nothing to re-embed into.
    refused = candor(stack, "gallery", "reembed", "--to", NEW, "--no-switch", check=False)
    assert refused.returncode != 0 and "UNAVAILABLE" in refused.stderr + refused.stdout

    settings = {"CANDOR_DETECTOR_ENGINE": "sface", "CANDOR_EMBEDDER_ENGINE": "sface"}
    stack.add_replica("detector", settings=settings)
    stack.add_replica("embedder", settings=settings)

    # Build only: every record with a photo is carried over; the one without is named, not lost.
    built = candor(stack, "gallery", "reembed", "--to", NEW, "--no-switch", "--quiet")
    assert "round 1: 6 records to re-embed" in built.stdout
    assert f"left out {unreferenced} (crowd): no photo is stored and no photo reference was kept" in built.stdout
    assert f"built: {NEW} holds every record but 1; not switched" in built.stdout
    assert f"re-embedding into  {NEW} 1 (128-d cosine)" in _models(stack)

    # Searches still use the old model's complete collection while the new one is built.
    during = search_json(stack, samples / "obama2.jpg", "CASE-RMB-1")
    assert during["model"]["id"] == OLD and during["candidates"][0]["subject_id"] == "obama"

    # An enrolment during the re-embedding goes to both models, so the switch loses nothing.
    candor(stack, "enroll", str(source / "biden" / "biden.jpg"), "--subject", "biden-2")
    both = wait_for_audit(
        stack,
        "SELECT details_json FROM audit_record WHERE kind = 'enroll.completed' AND details_json LIKE ?",
        ('%"biden-2"%',),
    )
    assert json.loads(both[-1][0])["also_enrolled_with"]["id"] == NEW

    # The matcher refuses a switch while a record of the old model is missing from the new one.
    with GatewayClient(state.gateway, stack.token()) as client:
        with pytest.raises(grpc.RpcError) as missing:
            client.switch_model(NEW, "model upgrade", [])
        assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
        assert "1 records of dlib-resnet-v1 are not in sface yet" in missing.value.details()  # type: ignore[attr-defined]
        # Nor does the command switch while a record could not be re-embedded, unless told to.
        held = candor(stack, "gallery", "reembed", "--to", NEW, "--reason", "model upgrade", check=False)
        assert held.returncode == 1 and "not switched: 1 records could not be re-embedded" in held.stdout
        assert "round 1: 1 records to re-embed" in held.stdout  # only the unreferenced record is missing
        assert search_json(stack, samples / "obama2.jpg", "CASE-RMB-2")["model"]["id"] == OLD

        switched = candor(
            stack, "gallery", "reembed", "--to", NEW, "--reason", "model upgrade", "--leave-out-missing", "--quiet"
        )
        assert f"switched: searches now use {NEW} 1 ({OLD} 1.0 is kept); 1 records left out" in (switched.stdout)
        after = search_json(stack, source / "obama" / "obama2.jpg", "CASE-RMB-3")
        assert after["model"]["id"] == NEW
        # The same photo, embedded by the same model on import and on search, is at distance zero.
        assert after["candidates"][0]["subject_id"] == "obama" and after["candidates"][0]["distance"] < 1e-4
        assert {c["model_id"] for c in after["candidates"]} == {NEW}
        # The face of the group photo was re-embedded from that face, not refused as one of six:
        # the gateway gave the new detector the face's box from the photo store.
        face = json.loads(candor(stack, *searching(samples / "t1.jpg", "CASE-RMB-6"), "--face", "3", "--json").stdout)
        assert face["candidates"][0]["subject_id"] == "t1-person-3" and face["candidates"][0]["distance"] < 1e-4
        models = client.gallery_models()
        assert (models.active.id, models.previous.id, models.target.id) == (NEW, OLD, "")
        # Imports now enrol with the new model; one asking for the old model is refused.
        with pytest.raises(grpc.RpcError) as stale:
            client.start_import("imp-old-model-1", str(source), 3, model_id=OLD)
        assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]

    record = wait_for_audit(stack, "SELECT actor, details_json FROM audit_record WHERE kind = 'gallery.model_switched'")
    actor, details = record[0][0], json.loads(record[0][1])
    assert actor == "local-operator"
    assert details["active"] == {"id": NEW, "version": "1"}
    assert details["previous"] == {"id": OLD, "version": "1.0"}
    assert details["reason"] == "model upgrade" and details["records_left_out"] == [unreferenced]
    started = wait_for_audit(stack, "SELECT details_json FROM audit_record WHERE kind = 'gallery.reembed_started'")
    assert len(started) == 1  # the later runs continued the same re-embedding

    # Back to the old model, through a gateway killed part way twice: once after the matcher began
    # the re-embedding, once after the matcher switched, each time before the gateway's own record.
    # The command run again, and the switch sent again (three at once), finish what was begun: each
    # step is on the chain once, and the switch's reason and left-out records are never lost.
    asyncio.run(_as_a_gateway_that_dies(stack, subjects.MATCH_BEGIN_REEMBED, _begin(client_models(stack).previous)))
    back = candor(stack, "gallery", "reembed", "--to", OLD, "--no-switch", "--quiet")
    # Its collection was kept, so only what was enrolled since is re-embedded.
    assert "records to re-embed" not in back.stdout, back.stdout
    asyncio.run(_as_a_gateway_that_dies(stack, subjects.MATCH_SWITCH_MODEL, _switch(OLD, "roll back")))
    with GatewayClient(state.gateway, stack.token()) as client, ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: client.switch_model(OLD, "roll back", []), range(3)))
    assert {(again.active.id, again.previous.id, again.target.id) for again in answers} == {(OLD, NEW, "")}
    assert search_json(stack, samples / "obama2.jpg", "CASE-RMB-4")["model"]["id"] == OLD
    wait_for_audit(stack, "SELECT 1 FROM audit_record WHERE kind = 'search.completed' AND case_number = 'CASE-RMB-4'")
    back_to_old = {
        kind: [details for details in _audit_details(stack, kind) if _model_id(details[field]) == OLD]
        for kind, field in MOVES.items()
    }
    assert {kind: len(records) for kind, records in back_to_old.items()} == dict.fromkeys(back_to_old, 1)
    assert back_to_old["matcher.model_switched"][0]["reason"] == "roll back"
    assert back_to_old["matcher.model_switched"][0]["records_left_out"] == []
    assert back_to_old["gallery.model_switched"][0]["reason"] == "roll back"

    # Expunging a record reaches every model's collection that holds it.
    obama3 = record_id_for("obama", hashlib.sha256((samples / "obama3.jpg").read_bytes()).hexdigest())
    held = {model: gallery_records(stack, "obama", model) for model in (OLD, NEW)}
    assert held == {OLD: 3, NEW: 3}
    candor(stack, "delete", "--record", obama3, "--reason", "wrong person")
    assert {model: gallery_records(stack, "obama", model) for model in (OLD, NEW)} == {OLD: 2, NEW: 2}

    # A gallery on dlib whose dlib detector is gone (services restarted on the default SFace, say):
    # searches are refused with what to do, not a bare "no responders".
    stack.stop_service("detector")
    refused = candor(stack, *searching(samples / "obama2.jpg", "CASE-RMB-5"), check=False)
    assert refused.returncode == 2 and "UNAVAILABLE" in refused.stderr
    assert "no detector of dlib-resnet-v1, the gallery's model, is answering" in refused.stderr
    assert "CANDOR_DETECTOR_ENGINE=yunet and CANDOR_EMBEDDER_ENGINE=dlib" in refused.stderr
    assert "candor gallery reembed --to MODEL" in refused.stderr

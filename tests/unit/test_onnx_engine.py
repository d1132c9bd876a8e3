"""The ONNX engine on model packs with SYNTHETIC weights built in the test (tests/onnx_packs.py):
loading through the manifest, a hash mismatch refused, provider fallback, batching, and a search
refused across models. The weights are random: these tests say nothing about accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from candor_cli.main import main
from candor_faces.decoding import DecodeLimits, decode_image
from candor_faces.embedding import build_engine
from candor_faces.onnx_faces import OnnxFaceDetector
from candor_kit import ConfigError, PreconditionFailed
from candor_kit.model_pack import CPU, CUDA, choose_providers, load_model_pack
from candor_matcher import EdgeBackend, Gallery, GalleryModel
from tests.onnx_packs import write_pack


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    return write_pack(tmp_path / "synthetic-arcface")


def chips(count: int, size: int = 112) -> list[np.ndarray]:
    return [np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8) for i in range(count)]


def test_a_pack_loads_through_its_manifest(pack: Path) -> None:
    from insightface.model_zoo import get_model

    loaded = load_model_pack(pack)
    assert (loaded.model_id, loaded.version, loaded.metric) == ("synthetic-arcface", "0.0-synthetic", "cosine")
    assert (loaded.embedding_dimension, loaded.input_size, loaded.mean, loaded.std) == (512, 112, 127.5, 127.5)
    assert loaded.licence == "Synthetic test weights, no licence needed."
    assert sorted(loaded.files) == ["detection", "recognition"]
    detector = get_model(str(pack), model_task="detection", providers=[CPU])
    assert (type(detector).__name__, detector.fmc, detector.use_kps) == ("SCRFD", 3, True)
    boxes, keypoints = detector.detect(np.zeros((480, 640, 3), np.uint8), input_size=(640, 640))
    assert boxes.shape == (0, 5) and keypoints.shape == (0, 5, 2)  # all-zero scores: no face
    engine = build_engine("onnx", None, None, str(pack))
    assert (engine.model.id, engine.model.dimension, engine.model.chip_size) == ("synthetic-arcface", 512, 112)


def test_a_file_that_fails_its_hash_is_refused(pack: Path) -> None:
    weights = bytearray((pack / "rec.onnx").read_bytes())
    weights[-1] ^= 0xFF
    (pack / "rec.onnx").write_bytes(bytes(weights))
    with pytest.raises(ConfigError, match=r"rec.onnx has SHA-256 [0-9a-f]{64}, the manifest says"):
        build_engine("onnx", None, None, str(pack))


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (lambda m: m.pop("version"), "version is required"),
        (lambda m: m.update(metric="hamming"), "metric must be one of cosine, euclidean"),
        (lambda m: m["tasks"]["recognition"].pop("sha256"), "every file needs its sha256"),
        (lambda m: m["tasks"]["recognition"].update(file="../rec.onnx"), "escapes"),
    ],
)
def test_an_incomplete_or_unsafe_manifest_is_refused(pack: Path, change: object, refusal: str) -> None:
    manifest = json.loads((pack / "manifest.json").read_text())
    change(manifest)  # type: ignore[operator]
    (pack / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=refusal):
        load_model_pack(pack)


def test_cuda_falls_back_to_cpu_and_the_log_says_which_runs(pack: Path) -> None:
    assert choose_providers("cuda", [CUDA, CPU]) == [CUDA, CPU]
    assert choose_providers("cpu", [CUDA, CPU]) == [CPU]
    with capture_logs() as logs:
        engine = build_engine("onnx", None, None, str(pack), providers="cuda")
    assert engine.providers == [CPU]  # this machine has no CUDA
    events = {entry["event"]: entry for entry in logs}
    assert events["onnx_cuda_unavailable"]["running"] == CPU
    assert events["onnx_model_loaded"]["providers"] == [CPU]


def test_a_batch_gives_the_same_vectors_as_one_by_one(pack: Path) -> None:
    engine = build_engine("onnx", None, None, str(pack))
    faces = chips(7)
    batch = engine.embed(faces)
    single = np.concatenate([engine.embed([chip]) for chip in faces])
    assert batch.shape == (7, 512)
    np.testing.assert_allclose(batch, single, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert engine.embed([]).shape == (0, 512)


def test_a_search_with_another_model_than_the_gallery_holds_is_refused(pack: Path, tmp_path: Path) -> None:
    engine = build_engine("onnx", None, None, str(pack))
    onnx_model = GalleryModel(id=engine.model.id, version=engine.model.version, metric="cosine", dimension=512)
    dlib_model = GalleryModel(id="dlib-resnet-v1", version="1.0", metric="euclidean", dimension=128)
    gallery = Gallery(EdgeBackend(tmp_path / "gallery"))
    try:
        assert gallery.index_to_search(dlib_model) is None  # an empty gallery: nothing to miss
        gallery.index_for(onnx_model).enroll("s-1", "ab" * 32, engine.embed(chips(1))[0].tolist(), {})
        with pytest.raises(PreconditionFailed, match=r"holds vectors of synthetic-arcface 0\.0-synthetic"):
            gallery.index_to_search(dlib_model)
        newer = GalleryModel(id=onnx_model.id, version="0.1", metric="cosine", dimension=512)
        with pytest.raises(PreconditionFailed, match=r"refusing version 0\.1"):
            gallery.index_to_search(newer)
        assert gallery.index_to_search(onnx_model) is not None
    finally:
        gallery.close()


def test_models_verify_and_list_from_the_command_line(pack: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "verify", str(pack)]) == 0
    assert "OK: synthetic-arcface 0.0-synthetic, 2 files match their SHA-256" in capsys.readouterr().out
    assert main(["models", "list", "--root", str(pack.parent)]) == 0
    listed = capsys.readouterr().out
    assert "dlib-resnet-v1 1.0" in listed and "synthetic-arcface 0.0-synthetic  cosine 512-d" in listed
    (pack / "det.onnx").write_bytes(b"not the detector")
    assert main(["models", "verify", str(pack)]) == 1
    assert "REFUSED: model pack synthetic-arcface: det.onnx has SHA-256" in capsys.readouterr().out


def test_the_pack_detector_finds_keypoints_and_cuts_arcface_chips(tmp_path: Path, samples: Path) -> None:
    pack = load_model_pack(write_pack(tmp_path / "one-face", one_face=True))
    photo = decode_image((samples / "obama.jpg").read_bytes(), DecodeLimits())
    [face] = OnnxFaceDetector(pack).detect(photo)
    assert face.chip.shape == (112, 112, 3) and face.chip.dtype == np.uint8
    assert len(face.landmarks) == 5 and face.detector_score == pytest.approx(0.9)
    # The synthetic box is 192 px wide in the 640 px input, scaled back to the photo.
    assert face.face_size_px == round(192 * max(photo.rgb.shape[:2]) / 640 * photo.scale)

"""Face detection with the real dlib models on real photos."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from candor_detector import DecodeLimits, FaceDetector, decode_image
from candor_embedder import build_engine
from candor_kit.model_files import DLIB_LANDMARKS_5, dlib_model_file

LIMITS = DecodeLimits()


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(dlib_model_file(DLIB_LANDMARKS_5))


def test_group_photo_yields_six_faces(detector: FaceDetector, samples: Path) -> None:
    faces = detector.detect(decode_image((samples / "t1.jpg").read_bytes(), LIMITS))
    assert len(faces) == 6
    assert [f.face_size_px for f in faces] == sorted((f.face_size_px for f in faces), reverse=True)
    for face in faces:
        assert face.chip.shape == (150, 150, 3)
        assert len(face.landmarks) == 5
        assert face.blur > 0


def test_large_photo_costs_the_working_size_but_reports_original_boxes(detector: FaceDetector, samples: Path) -> None:
    original = Image.open(samples / "obama.jpg")
    big = original.resize((original.width * 4, original.height * 4))
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG", quality=92)
    small_faces = detector.detect(decode_image((samples / "obama.jpg").read_bytes(), LIMITS))
    big_faces = detector.detect(decode_image(buffer.getvalue(), LIMITS))
    assert len(small_faces) == len(big_faces) == 1
    # The box is reported in the 4x photo's own pixels.
    assert big_faces[0].box[2] == pytest.approx(small_faces[0].box[2] * 4, rel=0.15)


def test_same_person_is_under_threshold_and_different_people_above(detector: FaceDetector, samples: Path) -> None:
    engine = build_engine("dlib", None, None)

    def vector(name: str) -> np.ndarray:
        faces = detector.detect(decode_image((samples / name).read_bytes(), LIMITS))
        return engine.embed([faces[0].chip])[0]

    obama, obama2, biden = vector("obama.jpg"), vector("obama2.jpg"), vector("biden.jpg")
    assert np.linalg.norm(obama - obama2) < engine.model.threshold
    assert np.linalg.norm(obama - biden) > engine.model.threshold


def test_photo_without_a_face_yields_none(detector: FaceDetector) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (400, 300), (120, 130, 140)).save(buffer, format="PNG")
    assert detector.detect(decode_image(buffer.getvalue(), LIMITS)) == []

"""Face detection with the real models on real photos: YuNet and dlib's HOG, each with dlib's chips."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from candor_faces.decoding import DecodeLimits, decode_image
from candor_faces.detection import dlib_chip_detector
from candor_faces.embedding import build_engine
from candor_faces.faces import Face, FaceDetector

LIMITS = DecodeLimits()


@pytest.fixture(scope="module", params=["yunet", "dlib"])
def detector(request: pytest.FixtureRequest) -> FaceDetector:
    return dlib_chip_detector(request.param)


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


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
    small_faces = detector.detect(decode_image((samples / "obama.jpg").read_bytes(), LIMITS))
    big_faces = detector.detect(decode_image(_jpeg(big), LIMITS))
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


@pytest.fixture(scope="module")
def yunet_and_hog() -> tuple[FaceDetector, FaceDetector]:
    return dlib_chip_detector("yunet"), dlib_chip_detector("dlib")


def test_yunet_finds_the_same_six_people_as_hog(
    yunet_and_hog: tuple[FaceDetector, FaceDetector], samples: Path
) -> None:
    image = decode_image((samples / "t1.jpg").read_bytes(), LIMITS)
    yunet, hog = (detector.detect(image) for detector in yunet_and_hog)
    assert len(yunet) == len(hog) == 6
    for face in yunet:
        x, y, w, h = face.box
        centre = (x + w / 2, y + h / 2)
        # Each YuNet face has a HOG face whose box holds its centre, and no two share one.
        holders = [
            f
            for f in hog
            if f.box[0] <= centre[0] <= f.box[0] + f.box[2] and f.box[1] <= centre[1] <= f.box[1] + f.box[3]
        ]
        assert len(holders) == 1
        assert 0.5 < face.detector_score <= 1.0


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"])
def test_yunet_leads_to_the_vector_hog_leads_to(
    yunet_and_hog: tuple[FaceDetector, FaceDetector], samples: Path, name: str
) -> None:
    """dlib's landmarks and chips are cut as before, so the person's vector barely moves: well
    inside the 0.6 threshold (measured on ../shared/datasets: mean 0.04, largest 0.23)."""
    engine = build_engine("dlib", None, None)
    image = decode_image((samples / name).read_bytes(), LIMITS)
    chips = [detector.detect(image)[0].chip for detector in yunet_and_hog]
    yunet_vector, hog_vector = engine.embed(chips)
    assert np.linalg.norm(yunet_vector - hog_vector) < 0.15


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"])
def test_yunet_finds_a_tight_passport_crop_that_hog_misses(
    yunet_and_hog: tuple[FaceDetector, FaceDetector], samples: Path, name: str
) -> None:
    """A 92 x 112 crop that the face overfills, as in a mugshot card's thumbnail (att_orl's kind):
    HOG's own box with a fifth cut from each side and the top."""
    yunet, hog = yunet_and_hog
    [face] = hog.detect(decode_image((samples / name).read_bytes(), LIMITS))
    x, y, w, h = face.box
    crop = Image.open(samples / name).crop((x + w // 5, y + h // 5, x + w - w // 5, y + h - h // 10))
    tight = decode_image(_jpeg(crop.resize((92, 112))), LIMITS)
    assert hog.detect(tight) == []
    [found] = yunet.detect(tight)
    assert found.chip.shape == (150, 150, 3)
    assert found.detector_score > 0.9


def test_yunet_finds_a_face_that_fills_a_12_megapixel_photo(
    yunet_and_hog: tuple[FaceDetector, FaceDetector], samples: Path
) -> None:
    """Large faces are found at a reduced scale (YuNet sees at most about 1 MP)."""
    yunet, _ = yunet_and_hog
    original = Image.open(samples / "obama.jpg")
    [face] = yunet.detect(decode_image((samples / "obama.jpg").read_bytes(), LIMITS))
    x, y, w, h = face.box
    close_up = original.crop((x - w // 3, y - h // 3, x + w + w // 3, y + h + h // 3)).resize((3000, 4000))
    [found] = yunet.detect(decode_image(_jpeg(close_up), DecodeLimits(working_pixels=12_000_000)))
    assert found.box[2] > 1500


def test_the_heads_turn_is_the_noses_offset_along_the_eyes_line_whatever_the_tilt() -> None:
    def face(eyes: tuple[tuple[float, float], tuple[float, float]], nose: tuple[float, float]) -> Face:
        return Face((0, 0, 1, 1), (), np.zeros((1, 1, 3), np.uint8), 1, 0.0, 0.0, eyes=eyes, nose=nose)

    assert face(((0, 0), (100, 0)), (50, 40)).turn == pytest.approx(0.0)  # frontal
    assert face(((0, 0), (100, 0)), (75, 40)).turn == pytest.approx(0.25)  # a quarter of the eyes' distance
    assert face(((0, 0), (100, 100)), (25, 75)).turn == pytest.approx(0.0)  # tilted 45°, nose on the midline
    assert Face((0, 0, 1, 1), (), np.zeros((1, 1, 3), np.uint8), 1, 0.0, 0.0).turn == 0.0  # no landmarks

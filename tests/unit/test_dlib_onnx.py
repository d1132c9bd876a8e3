"""dlib's face ResNet converted to ONNX from dlib's own model file: the same vectors as dlib-bin
on every test photo, under the same model identity, so galleries and thresholds stay valid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from candor_faces.decoding import DecodeLimits, decode_image
from candor_faces.dlib_onnx import read_dlib_resnet
from candor_faces.embedding import build_engine
from candor_faces.engines import DlibOnnxEngine, DlibResNetEngine
from candor_faces.faces import FaceDetector
from candor_kit import ConfigError
from candor_kit.model_files import DLIB_LANDMARKS_5, DLIB_RESNET, dlib_model_file


@pytest.fixture(scope="module")
def chips(samples: Path) -> list[np.ndarray]:
    """Every face of every sample photo (the whole frame where HOG finds none)."""
    detector = FaceDetector(dlib_model_file(DLIB_LANDMARKS_5), crop_fallback=True)
    found = []
    for photo in sorted(samples.iterdir()):
        found += [face.chip for face in detector.detect(decode_image(photo.read_bytes(), DecodeLimits()))]
    return found


def test_the_converted_network_gives_dlibs_vectors_on_every_test_photo(chips: list[np.ndarray]) -> None:
    native = build_engine("dlib-native", None, None)
    converted = build_engine("dlib", None, None)
    assert isinstance(native, DlibResNetEngine) and isinstance(converted, DlibOnnxEngine)
    assert converted.model == native.model  # one identity: a gallery made by either serves both
    assert len(chips) >= 12
    expected = native.embed(chips)
    got = np.concatenate([converted.embed([chip]) for chip in chips])
    cosine = (expected * got).sum(axis=1) / np.linalg.norm(expected, axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() >= 0.9999
    assert np.abs(expected - got).max() < 1e-4
    np.testing.assert_allclose(converted.embed(chips), got, atol=1e-5)  # a batch is the same as one by one


def test_a_model_file_that_is_not_dlibs_face_resnet_is_refused() -> None:
    with pytest.raises(ConfigError, match="is not dlib's face ResNet"):
        read_dlib_resnet(dlib_model_file(DLIB_LANDMARKS_5))


def test_the_parser_reads_dlibs_layers_in_network_order() -> None:
    net = read_dlib_resnet(dlib_model_file(DLIB_RESNET))
    assert len(net.convs) == len(net.affines) == 29
    assert net.convs[0].weight.shape == (32, 3, 7, 7) and net.convs[0].stride == 2
    assert net.convs[-1].weight.shape == (256, 256, 3, 3) and net.fc.shape == (256, 128)
    assert net.means == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)

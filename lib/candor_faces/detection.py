"""From a configured detector name to a running face detector, with the id of the model its chips
are cut for. The detector service, `candor eval` and the benchmarks all build theirs here, so what
is measured is exactly what serves.
"""

from __future__ import annotations

from collections.abc import Iterable

from candor_faces.faces import AlignmentSpec, FaceDetector
from candor_faces.onnx_faces import OnnxFaceDetector
from candor_faces.yunet import YuNetFinder
from candor_kit.model_files import DLIB_LANDMARKS_5, DLIB_RESNET_MODEL_ID, YUNET, dlib_model_file, pinned_model_file
from candor_kit.wheel_packs import pack_for

#: The finders that lead to dlib chips, by the name CANDOR_DETECTOR_ENGINE gives them.
DLIB_CHIP_FINDERS = ("yunet", "dlib")
#: Detector engines that cut ArcFace chips with a model pack's detector (SFace's pack by default).
PACK_DETECTORS = ("sface", "onnx")
#: dlib's own chips: 150 px, padding 0.25 (its ResNet was trained on these).
DEFAULT_ALIGNMENT = AlignmentSpec()


def dlib_chip_detector(
    finder: str = "yunet",
    dlib_dir: str | None = None,
    model_files_dir: str | None = None,
    alignment: AlignmentSpec = DEFAULT_ALIGNMENT,
    crop_fallback: bool = False,
) -> FaceDetector:
    """A detector cutting dlib chips, finding faces with YuNet (``yunet``) or dlib's HOG (``dlib``).

    Raises ConfigError when a model file is missing or is not the pinned upstream file.
    """
    if finder not in DLIB_CHIP_FINDERS:
        raise ValueError(f"unknown face finder {finder!r}; known: {', '.join(DLIB_CHIP_FINDERS)}")
    landmarks = dlib_model_file(DLIB_LANDMARKS_5, dlib_dir)
    chosen = YuNetFinder(pinned_model_file(YUNET, model_files_dir)) if finder == "yunet" else None
    return FaceDetector(landmarks, alignment, crop_fallback=crop_fallback, finder=chosen)


def build_detector(
    engine: str,
    *,
    model_pack: str | None = None,
    providers: str = "cpu",
    accepted_licences: Iterable[str] = (),
    model_dir: str | None = None,
    model_files_dir: str | None = None,
    alignment: AlignmentSpec = DEFAULT_ALIGNMENT,
    crop_fallback: bool = False,
) -> tuple[FaceDetector | OnnxFaceDetector, str]:
    """The default model's YuNet with ArcFace chips for SFace (``sface``), an ONNX model pack's
    detector (``onnx``), or YuNet or dlib's HOG with dlib chips (``yunet``, ``dlib``); with the id
    of the model the chips are cut for.

    Raises ConfigError when a model file is missing or is not the pinned upstream file.
    """
    if engine in PACK_DETECTORS:
        pack = pack_for(engine, model_pack, model_files_dir)
        return OnnxFaceDetector(pack, providers, accepted_licences=accepted_licences), pack.model_id
    detector = dlib_chip_detector(engine, model_dir, model_files_dir, alignment, crop_fallback)
    return detector, DLIB_RESNET_MODEL_ID

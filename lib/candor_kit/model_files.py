"""Locating the model files Candor runs: dlib's, and the OpenCV Zoo's YuNet and SFace.

dlib's files ship in the ``face_recognition_models`` package, which is found with
``importlib.util.find_spec`` and never imported: its ``__init__`` uses ``pkg_resources``, which
current setuptools no longer provides.

The OpenCV Zoo files are fetched once at set-up by ``python -m candor_kit.model_fetch`` into the
environment's ``share/candor/models`` folder (or a folder named in the settings). They are never
downloaded at run time, and each is checked against the SHA-256 of the upstream file when loaded.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from candor_kit.errors import ConfigError
from candor_kit.model_pack import sha256_file

DLIB_LANDMARKS_5 = "shape_predictor_5_face_landmarks.dat"
DLIB_RESNET = "dlib_face_recognition_resnet_model_v1.dat"
#: The model id of dlib's ResNet face descriptor, whichever engine runs it.
DLIB_RESNET_MODEL_ID = "dlib-resnet-v1"


@dataclass(frozen=True)
class PinnedFile:
    """A model file known by name, size and the SHA-256 of the upstream file (its Git LFS oid)."""

    name: str
    sha256: str
    size: int
    licence: str
    upstream: str


#: YuNet, OpenCV Zoo models/face_detection_yunet (MIT); the oid of the upstream LFS object.
YUNET = PinnedFile(
    "face_detection_yunet_2023mar.onnx",
    "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    232_589,
    "MIT",
    "opencv/opencv_zoo models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
)
#: SFace, OpenCV Zoo models/face_recognition_sface (Apache-2.0); the upstream file of 2021-12
#: as first published (the zoo later replaced it with a smaller export of the same weights).
SFACE = PinnedFile(
    "face_recognition_sface_2021dec.onnx",
    "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
    38_696_353,
    "Apache-2.0",
    "opencv/opencv_zoo models/face_recognition_sface/face_recognition_sface_2021dec.onnx (edef535)",
)
OPENCV_ZOO_FILES = (YUNET, SFACE)


def dlib_model_file(name: str, folder: str | None = None) -> Path:
    """The path of a dlib model file, from ``folder`` if given, else from the installed package."""
    if folder:
        base = Path(folder)
    else:
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError("the face_recognition_models package is not installed")
        base = Path(next(iter(spec.submodule_search_locations))) / "models"
    path = base / name
    if not path.is_file():
        raise ConfigError(f"model file {path} is missing")
    return path


def default_model_dir() -> Path:
    """Where ``candor_kit.model_fetch`` puts model files: this environment's share/candor/models."""
    return Path(sys.prefix) / "share" / "candor" / "models"


def pinned_model_file(pinned: PinnedFile, folder: str | None = None) -> Path:
    """The path of a pinned model file, checked against its SHA-256; ConfigError if missing or altered."""
    path = Path(folder or default_model_dir()) / pinned.name
    if not path.is_file():
        raise ConfigError(
            f"model file {path} is missing; fetch it at set-up with `python -m candor_kit.model_fetch`"
            + (f" --dest {folder}" if folder else "")
        )
    actual = sha256_file(path)
    if actual != pinned.sha256:
        raise ConfigError(f"model file {path} has SHA-256 {actual}, not the upstream file's {pinned.sha256}")
    return path

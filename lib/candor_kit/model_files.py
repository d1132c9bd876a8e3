"""Locating the dlib model files shipped in the ``face_recognition_models`` package.

The package is found with ``importlib.util.find_spec`` and never imported: its ``__init__`` uses
``pkg_resources``, which current setuptools no longer provides.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from candor_kit.errors import ConfigError

DLIB_LANDMARKS_5 = "shape_predictor_5_face_landmarks.dat"
DLIB_RESNET = "dlib_face_recognition_resnet_model_v1.dat"
#: The model id of dlib's ResNet face descriptor, whichever engine runs it.
DLIB_RESNET_MODEL_ID = "dlib-resnet-v1"


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

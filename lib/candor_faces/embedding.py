"""From a configured engine name to a running embedding engine. The embedder service, `candor
eval`, `candor calibrate` and the benchmarks all build theirs here; it loads no detector code.
"""

from __future__ import annotations

from collections.abc import Iterable

from candor_faces.engines import DlibOnnxEngine, DlibResNetEngine, EmbeddingEngine
from candor_faces.onnx_engine import OnnxRecognitionEngine
from candor_kit.errors import ConfigError
from candor_kit.model_files import DLIB_RESNET, dlib_model_file
from candor_kit.wheel_packs import pack_for


def build_engine(
    name: str,
    model_dir: str | None,
    threshold: float | None,
    model_pack: str | None = None,
    providers: str = "cpu",
    accepted_licences: Iterable[str] = (),
    model_files_dir: str | None = None,
) -> EmbeddingEngine:
    """The engine named by configuration: SFace (the default model, from the pack set-up fetched
    into ``model_files_dir``), dlib's ResNet on onnxruntime or on dlib itself, or the recogniser
    of an ONNX model pack."""
    if name in ("sface", "onnx"):
        return OnnxRecognitionEngine(
            pack_for(name, model_pack, model_files_dir), providers, threshold, accepted_licences
        )
    if name == "dlib":
        return DlibOnnxEngine(dlib_model_file(DLIB_RESNET, model_dir), threshold or 0.6, providers)
    if name == "dlib-native":
        return DlibResNetEngine(dlib_model_file(DLIB_RESNET, model_dir), threshold or 0.6)
    raise ConfigError(f"unknown embedding engine {name!r}; known: sface, dlib, dlib-native, onnx")

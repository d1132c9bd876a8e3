"""An ArcFace-style recogniser from an ONNX model pack, run by onnxruntime through insightface.

The pack is verified (every file against its SHA-256) before a session is made. Providers come
from configuration: ``cpu``, or ``cuda`` with CPU as the fallback; the log says which provider
actually runs. Batches are dynamic: a batch of chips is one session call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from candor_embedder.engines import BatchEngine, ModelInfo
from candor_kit.errors import ConfigError
from candor_kit.model_pack import ModelPack, load_model_pack, load_task_model


class OnnxRecognitionEngine(BatchEngine):
    """A pack's recognition model: aligned RGB chips (input_size square) in, L2-normalised vectors out."""

    def __init__(
        self,
        pack: ModelPack,
        providers: str = "cpu",
        threshold: float | None = None,
        accepted_licences: Iterable[str] = (),
    ) -> None:
        self._net, self.providers = load_task_model(pack, "recognition", providers, accepted_licences)
        self._model = ModelInfo(
            id=pack.model_id,
            version=pack.version,
            metric=pack.metric,
            dimension=pack.embedding_dimension,
            threshold=threshold or (0.6 if pack.metric == "cosine" else 1.0),
            chip_size=pack.input_size,
        )

    def _embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.stack([np.asarray(chip, dtype=np.float32) for chip in chips]).transpose(0, 3, 1, 2)
        vectors = np.asarray(self._net.forward(batch), dtype=np.float32)
        if vectors.shape != (len(chips), self._model.dimension):
            raise ConfigError(f"model {self._model.id} returned {vectors.shape}, expected ({len(chips)}, dim)")
        if self._model.metric == "cosine":
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors


def build_onnx_engine(
    pack_dir: Path, providers: str, threshold: float | None, accepted_licences: Iterable[str] = ()
) -> OnnxRecognitionEngine:
    """The recognition engine of the pack in ``pack_dir``."""
    return OnnxRecognitionEngine(load_model_pack(pack_dir), providers, threshold, accepted_licences)

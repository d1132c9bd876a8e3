"""An ArcFace-style recogniser from an ONNX model pack, run by onnxruntime.

The pack is verified (every file against its SHA-256) before a session is made. Providers come
from configuration: ``cpu``, or ``cuda`` with CPU as the fallback; the log says which provider
actually runs. Chips are normalised with the manifest's mean and std, as insightface's
ArcFaceONNX does; batches are dynamic: a batch of chips is one session call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from candor_faces.engines import BatchEngine, ModelInfo
from candor_kit.errors import ConfigError
from candor_kit.model_pack import ModelPack, recognition_session


class OnnxRecognitionEngine(BatchEngine):
    """A pack's recognition model: aligned RGB chips (input_size square) in, L2-normalised vectors out."""

    def __init__(
        self,
        pack: ModelPack,
        providers: str = "cpu",
        threshold: float | None = None,
        accepted_licences: Iterable[str] = (),
    ) -> None:
        self._session, self.providers = recognition_session(pack, providers, accepted_licences)
        self._input = self._session.get_inputs()[0].name
        #: An export fixed to one chip a call is run once per chip.
        self._one_at_a_time = self._session.get_inputs()[0].shape[0] == 1
        self._mean, self._std = np.float32(pack.mean), np.float32(pack.std)
        self._model = ModelInfo(
            id=pack.model_id,
            version=pack.version,
            metric=pack.metric,
            dimension=pack.embedding_dimension,
            # Configuration first, then the pack maker's nominal threshold, then a generic guess.
            threshold=threshold or pack.nominal_threshold or (0.6 if pack.metric == "cosine" else 1.0),
            chip_size=pack.input_size,
        )

    def _embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.stack([np.asarray(chip, dtype=np.float32) for chip in chips]).transpose(0, 3, 1, 2)
        batch = np.ascontiguousarray((batch - self._mean) / self._std)
        parts = [batch[i : i + 1] for i in range(len(batch))] if self._one_at_a_time else [batch]
        vectors = np.concatenate([self._session.run(None, {self._input: part})[0] for part in parts]).astype(np.float32)
        if vectors.shape != (len(chips), self._model.dimension):
            raise ConfigError(f"model {self._model.id} returned {vectors.shape}, expected ({len(chips)}, dim)")
        if self._model.metric == "cosine":
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

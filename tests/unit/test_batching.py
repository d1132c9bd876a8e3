"""The embedder merges concurrent requests into one model call, without mixing up results."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from candor_embedder import EmbeddingBatcher
from candor_faces.decoding import DecodeLimits, decode_image
from candor_faces.embedding import build_engine
from candor_faces.faces import FaceDetector
from candor_kit.model_files import DLIB_LANDMARKS_5, dlib_model_file


@pytest.mark.asyncio(loop_scope="session")
async def test_concurrent_requests_share_a_batch_and_get_their_own_vectors(samples: Path) -> None:
    detector = FaceDetector(dlib_model_file(DLIB_LANDMARKS_5))
    chips = [face.chip for face in detector.detect(decode_image((samples / "t1.jpg").read_bytes(), DecodeLimits()))]
    engine = build_engine("dlib", None, None)
    alone = [engine.embed([chip])[0] for chip in chips]

    batcher = EmbeddingBatcher(engine, max_batch=32)
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.embed([chip]) for chip in chips))
    finally:
        await batcher.close()
    # All six were queued before the engine picked any up, so they went in one model call.
    assert batcher.batches_run == 1
    for vector, expected in zip(results, alone, strict=True):
        assert vector.shape == (1, 128)
        np.testing.assert_allclose(vector[0], expected, atol=1e-5)

"""Milliseconds per face for dlib's ResNet on dlib-bin (no BLAS) and on the embedder's default
fast path (dlib's weights converted to ONNX, on onnxruntime), on the same chips, in one run.

Both engines are the embedder service's own (``dlib-native`` and ``dlib``). The benchmark
alternates passes between them and prints each one's median ms per face (one face per call, and
whole batches), their ratio, and the worst cosine between their vectors.

    python bench/embedder_speed.py [--chips 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from fetch_sample_images import fetch  # noqa: E402

from candor_faces.decoding import DecodeLimits, decode_image  # noqa: E402
from candor_faces.detection import dlib_chip_detector  # noqa: E402
from candor_faces.embedding import build_engine  # noqa: E402
from candor_faces.engines import EmbeddingEngine  # noqa: E402


def collect_chips(datasets: Path, limit: int) -> np.ndarray:
    """Aligned 150 px chips from the sample photos and, where present, deepface_unit."""
    detector = dlib_chip_detector()
    samples = fetch(ROOT / ".cache" / "samples")
    paths = [samples / n for n in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "t1.jpg")]
    paths += sorted((datasets / "deepface_unit").glob("*/*.jpg"))
    chips = []
    for path in paths:
        try:
            chips += [face.chip for face in detector.detect(decode_image(path.read_bytes(), DecodeLimits()))]
        except Exception:  # noqa: BLE001 - a file the detector refuses is simply not a chip source
            continue
        if len(chips) >= limit:
            break
    return np.stack(chips[:limit])


def timed_pass(engine: EmbeddingEngine, chips: np.ndarray) -> tuple[list[float], float, np.ndarray]:
    """Per-face milliseconds one chip at a time, then per-face milliseconds of one whole batch."""
    single = []
    for chip in chips:
        start = time.perf_counter()
        engine.embed([chip])
        single.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    vectors = engine.embed(list(chips))
    return single, (time.perf_counter() - start) * 1000 / len(chips), vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--chips", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    chips = collect_chips(args.datasets, args.chips)
    engines = {
        "dlib-bin (dlib-native)": build_engine("dlib-native", None, None),
        "ONNX (dlib)": build_engine("dlib", None, None),
    }
    single: dict[str, list[float]] = {name: [] for name in engines}
    batch: dict[str, list[float]] = {name: [] for name in engines}
    vectors: dict[str, np.ndarray] = {}
    for engine in engines.values():  # warm both
        engine.embed([chips[0]])
    for _ in range(args.rounds):
        for name, engine in engines.items():
            one, whole, vectors[name] = timed_pass(engine, chips)
            single[name] += one
            batch[name].append(whole)
    slow, fast = (vectors[name] for name in engines)
    cosine = (slow * fast).sum(axis=1) / np.linalg.norm(slow, axis=1) / np.linalg.norm(fast, axis=1)
    medians = {name: statistics.median(single[name]) for name in engines}
    print(f"chips: {len(chips)} x {args.rounds} rounds, passes alternated")
    for name in engines:
        print(
            f"{name:<24} {medians[name]:7.1f} ms/face one at a time, {statistics.median(batch[name]):7.1f} in a batch"
        )
    slow_ms, fast_ms = medians.values()
    print(
        f"ratio {slow_ms / fast_ms:.2f}x (goal >= 5); worst cosine {cosine.min():.7f} (goal >= 0.9999); "
        f"max abs difference {np.abs(slow - fast).max():.1e}"
    )


if __name__ == "__main__":
    main()

"""Milliseconds per face for the default embedder (dlib-bin, no BLAS) and a fast path, same chips.

The fast path is dlib built from source against OpenBLAS, in its own virtual environment
(`scripts/build_fast_dlib.sh`). Both run dlib's ResNet from the same model file on the same
aligned chips; the benchmark alternates passes between them and prints each one's median ms per
face (one thread, one face per call, and whole batches), their ratio, and the worst cosine
between their vectors.

    python bench/embedder_speed.py [--fast-python .cache/dlib-openblas/bin/python] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from fetch_sample_images import fetch  # noqa: E402

from candor_detector import DecodeLimits, FaceDetector, decode_image  # noqa: E402
from candor_kit.model_files import DLIB_LANDMARKS_5, DLIB_RESNET, dlib_model_file  # noqa: E402

# Runs in the fast path's interpreter: only numpy and dlib there.
TIMER = """
import json, sys, time
import numpy as np, dlib
chips = np.load(sys.argv[1])
net = dlib.face_recognition_model_v1(sys.argv[2])
net.compute_face_descriptor(chips[0])
single = []
for chip in chips:
    start = time.perf_counter(); net.compute_face_descriptor(chip); single.append((time.perf_counter() - start) * 1000)
start = time.perf_counter()
vectors = np.array([np.array(v) for v in net.compute_face_descriptor(list(chips))])
batch = (time.perf_counter() - start) * 1000 / len(chips)
np.save(sys.argv[3], vectors)
print(json.dumps({"single": single, "batch": batch, "blas": bool(dlib.DLIB_USE_BLAS)}))
"""


def collect_chips(datasets: Path, limit: int) -> np.ndarray:
    """Aligned 150 px chips from the sample photos and, where present, deepface_unit."""
    detector = FaceDetector(dlib_model_file(DLIB_LANDMARKS_5))
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


def run(python: str, chips_file: Path, vectors_file: Path) -> dict:  # type: ignore[type-arg]
    """Time one pass in the given interpreter."""
    model = str(dlib_model_file(DLIB_RESNET))
    result = subprocess.run(
        [python, "-c", TIMER, str(chips_file), model, str(vectors_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast-python", default=str(ROOT / ".cache" / "dlib-openblas" / "bin" / "python"))
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--chips", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not Path(args.fast_python).exists():
        sys.exit(f"{args.fast_python} not found; build it with scripts/build_fast_dlib.sh")

    chips = collect_chips(args.datasets, args.chips)
    with tempfile.TemporaryDirectory() as tmp:
        chips_file, slow_vectors, fast_vectors = Path(tmp) / "chips.npy", Path(tmp) / "slow.npy", Path(tmp) / "fast.npy"
        np.save(chips_file, chips)
        slow_single, fast_single, slow_batch, fast_batch = [], [], [], []
        for _ in range(args.rounds):
            slow = run(sys.executable, chips_file, slow_vectors)
            fast = run(args.fast_python, chips_file, fast_vectors)
            slow_single += slow["single"]
            fast_single += fast["single"]
            slow_batch.append(slow["batch"])
            fast_batch.append(fast["batch"])
        a, b = np.load(slow_vectors), np.load(fast_vectors)
    cosine = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    slow_ms, fast_ms = statistics.median(slow_single), statistics.median(fast_single)
    print(f"chips: {len(chips)} x {args.rounds} rounds; default BLAS: {slow['blas']}, fast path BLAS: {fast['blas']}")
    print(f"dlib-bin           {slow_ms:7.1f} ms/face one at a time, {statistics.median(slow_batch):7.1f} in a batch")
    print(f"dlib + OpenBLAS    {fast_ms:7.1f} ms/face one at a time, {statistics.median(fast_batch):7.1f} in a batch")
    print(f"ratio {slow_ms / fast_ms:.2f}x (goal >= 5); worst cosine {cosine.min():.7f} (goal >= 0.9999)")


if __name__ == "__main__":
    main()

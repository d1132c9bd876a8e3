"""The default model, SFace, against dlib's ResNet (the default before it), per photo and per
face, side by side in one run: the services' own detectors and engines, on one thread each.

For each model the benchmark times, on the same photos and alternating between the models:
decoding and detection with alignment (what the detector service does per photo, the photo
scaled to at most 1 MP for YuNet in both), the recogniser per face (one chip a call), and the
whole pipeline as photos per second (decode, detect, embed the largest face). onnxruntime and
OpenCV run on one thread, so the figures are the CPU a photo costs, not what two cores give.

    python bench/model_speed.py [--photos 120] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from fetch_sample_images import fetch  # noqa: E402

from candor_eval.embedding import as_jpeg_or_png  # noqa: E402
from candor_faces.decoding import DecodeLimits, decode_image  # noqa: E402
from candor_faces.detection import dlib_chip_detector  # noqa: E402
from candor_faces.embedding import build_engine  # noqa: E402
from candor_faces.onnx_faces import OnnxFaceDetector  # noqa: E402
from candor_kit import model_pack  # noqa: E402
from candor_kit.wheel_packs import default_pack  # noqa: E402

#: Each model by the embedder engine that runs it (the detector's is the one the services pair with it).
MODELS = {"dlib-resnet-v1 (YuNet, dlib chips)": "dlib", "sface (YuNet, ArcFace chips)": "sface"}


def one_thread() -> None:
    """onnxruntime sessions and OpenCV on one thread each."""
    made = model_pack.session_options

    def single() -> Any:
        options = made()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return options

    model_pack.session_options = single  # type: ignore[assignment]
    cv2.setNumThreads(1)


def photos(datasets: Path, limit: int) -> list[bytes]:
    """The sample photos, then the shared sets' colour photos, then grey ones, up to ``limit``."""
    samples = fetch(ROOT / ".cache" / "samples")
    paths = [samples / n for n in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "t1.jpg")]
    for name in ("deepface_unit", "face_recognition_examples", "yalefaces", "att_orl"):
        paths += sorted(p for p in (datasets / name).glob("*/*") if p.is_file())
    return [as_jpeg_or_png(path.read_bytes()) for path in paths[:limit]]


def build(engine: str) -> tuple[Any, Any]:
    """The detector and engine the services build for this model."""
    detector = OnnxFaceDetector(default_pack()) if engine == "sface" else dlib_chip_detector("yunet")
    return detector, build_engine(engine, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--photos", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    one_thread()
    images = photos(args.datasets, args.photos)
    built = {name: build(engine) for name, engine in MODELS.items()}
    detect_ms: dict[str, list[float]] = {name: [] for name in MODELS}
    embed_ms: dict[str, list[float]] = {name: [] for name in MODELS}
    wall: dict[str, list[float]] = {name: [] for name in MODELS}
    faces: dict[str, int] = {}
    for detector, engine in built.values():  # warm both
        engine.embed([detector.detect(decode_image(images[0], DecodeLimits()))[0].chip])
    for _ in range(args.rounds):
        for name, (detector, engine) in built.items():
            start_all, found = time.perf_counter(), 0
            for data in images:
                start = time.perf_counter()
                detected = detector.detect(decode_image(data, DecodeLimits()))
                detect_ms[name].append((time.perf_counter() - start) * 1000)
                if detected:
                    start = time.perf_counter()
                    engine.embed([detected[0].chip])
                    embed_ms[name].append((time.perf_counter() - start) * 1000)
                    found += 1
            wall[name].append(time.perf_counter() - start_all)
            faces[name] = found
    print(f"photos: {len(images)} x {args.rounds} rounds, models alternated; one thread; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    print(f"{'model':<36} {'detect ms/photo':>16} {'embed ms/face':>14} {'photos/s':>9} {'faces found':>12}")
    rates = {}
    for name in MODELS:
        rates[name] = len(images) / statistics.median(wall[name])
        print(
            f"{name:<36} {statistics.median(detect_ms[name]):>16.1f} {statistics.median(embed_ms[name]):>14.1f} "
            f"{rates[name]:>9.1f} {faces[name]:>12}"
        )
    old, new = MODELS
    detect_ratio = statistics.median(detect_ms[new]) / statistics.median(detect_ms[old])
    embed_ratio = statistics.median(embed_ms[new]) / statistics.median(embed_ms[old])
    print(
        f"sface / dlib: detect {detect_ratio:.2f}x, embed {embed_ratio:.2f}x, photos/s {rates[new] / rates[old]:.2f}x"
    )


if __name__ == "__main__":
    main()

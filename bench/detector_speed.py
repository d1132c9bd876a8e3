"""Milliseconds per photo for the detector's face finders, YuNet (the default) and dlib's HOG, at
0.3, 2 and 12 megapixels, on the same photos in one run.

Both finders run inside the detector service's own ``FaceDetector`` (dlib's 5-point landmarks and
150 px chips after either), on photos decoded as the service decodes them. Two modes:

- ``service``: the service's limits, so a photo over 1.5 MP is decoded down to 1.5 MP first;
- ``full``: the photo at its own size, to show how each finder's cost grows with it.

The photos are the package-shipped obama.jpg (one face) and t1.jpg (six faces), resized to each
size. Passes alternate between the finders; each figure is the median of every timed call.

    python bench/detector_speed.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from fetch_sample_images import fetch  # noqa: E402

from candor_faces.decoding import DecodedImage, DecodeLimits, decode_image  # noqa: E402
from candor_faces.detection import dlib_chip_detector  # noqa: E402
from candor_faces.faces import FaceDetector  # noqa: E402

SIZES_MP = (0.3, 2.0, 12.0)
PHOTOS = ("obama.jpg", "t1.jpg")
MODES = {"service": DecodeLimits(), "full": DecodeLimits(working_pixels=13_000_000)}


def resized_jpeg(path: Path, megapixels: float) -> bytes:
    """The photo scaled to about ``megapixels``, as a quality-92 JPEG."""
    image = Image.open(path).convert("RGB")
    factor = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
    buffer = io.BytesIO()
    image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS).save(
        buffer, format="JPEG", quality=92
    )
    return buffer.getvalue()


def timed(detector: FaceDetector, image: DecodedImage) -> tuple[float, int]:
    """Milliseconds for one detect() and the number of faces found."""
    start = time.perf_counter()
    faces = detector.detect(image)
    return (time.perf_counter() - start) * 1000, len(faces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    samples = fetch(ROOT / ".cache" / "samples")
    detectors = {"yunet": dlib_chip_detector("yunet"), "hog": dlib_chip_detector("dlib")}
    print(f"{args.rounds} rounds, passes alternated; ms per photo (median), faces found per photo")
    print(f"{'mode':<8} {'size':>6} {'photo':<10} {'YuNet ms':>9} {'HOG ms':>9} {'HOG/YuNet':>10} {'faces':>9}")
    for mode, limits in MODES.items():
        for megapixels in SIZES_MP:
            for name in PHOTOS:
                image = decode_image(resized_jpeg(samples / name, megapixels), limits)
                times: dict[str, list[float]] = {finder: [] for finder in detectors}
                found: dict[str, int] = {}
                for detector in detectors.values():
                    detector.detect(image)  # warm
                for _ in range(args.rounds):
                    for finder, detector in detectors.items():
                        ms, found[finder] = timed(detector, image)
                        times[finder].append(ms)
                yunet, hog = (statistics.median(times[f]) for f in detectors)
                print(
                    f"{mode:<8} {megapixels:>4g}MP {name:<10} {yunet:9.1f} {hog:9.1f} {hog / yunet:9.2f}x "
                    f"{found['yunet']:>4}/{found['hog']:<4}"
                )


if __name__ == "__main__":
    main()

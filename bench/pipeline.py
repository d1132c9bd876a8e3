"""Search latency through the running stack against the same work done in-process with its models.

Both sides do the same work on the same 20 photos with the default model: decode (with the same
limits and JPEG draft scaling), YuNet detection and ArcFace alignment, the SFace descriptor and a
nearest-neighbour search (cosine) over the same gallery. The stack adds gRPC, three NATS
request/reply hops, Qdrant Edge and a durable JetStream audit publish. The two sides alternate
pass by pass (or photo by photo with --interleave), so machine noise hits both alike.

    python bench/pipeline.py [--datasets ../shared/datasets] [--rounds 5] [--interleave]
                             [--detector-threads N]

Prints both p50s and their ratio (stack / in-process; goal <= 1.10), and each search's time by part
from the services' trace spans. ``--detector-threads`` sets the stack's CANDOR_DETECTOR_THREADS
(unset: the default, a lane per usable core), to compare settings on fresh stacks.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from fetch_sample_images import fetch  # noqa: E402
from spans import SpanReceiver, median_parts, trace_parts  # noqa: E402

from candor_cli import GatewayClient, LocalStack  # noqa: E402
from candor_faces.decoding import DecodeLimits, decode_image  # noqa: E402
from candor_faces.detection import build_detector  # noqa: E402
from candor_faces.embedding import build_engine  # noqa: E402
from candor_kit import CandorError  # noqa: E402
from candor_kit.policy import DEFAULT_POLICY_YAML  # noqa: E402

#: The gateway's span of a search, the root of its trace.
SEARCH_SPAN = "candor.gateway.v1.GatewayService/Search"


class InProcess:
    """The anchor: the detector's and the embedder's default models called directly (YuNet and
    SFace from the default pack, as the services build them), numpy for the gallery."""

    def __init__(self) -> None:
        self.detector, _ = build_detector("sface")
        self.engine = build_engine("sface", None, None)
        self.limits = DecodeLimits()
        self.gallery: list[np.ndarray] = []
        self.subjects: list[str] = []
        #: Milliseconds of each search's parts, to set beside the stack's.
        self.parts: list[dict[str, float]] = []

    def faces(self, data: bytes) -> list[np.ndarray]:
        started = time.perf_counter()
        faces = self.detector.detect(decode_image(data, self.limits))
        detected = time.perf_counter()
        vectors = [self.engine.embed([face.chip])[0] for face in faces]
        self.parts.append(
            {"decode and detect": (detected - started) * 1000, "embed": (time.perf_counter() - detected) * 1000}
        )
        return vectors

    def enroll(self, subject: str, vector: np.ndarray) -> None:
        self.gallery.append(vector / np.linalg.norm(vector))
        self.subjects.append(subject)

    def search(self, data: bytes, threshold: float = 0.642, limit: int = 10) -> list[tuple[str, float]]:
        vectors = self.faces(data)
        distances = 1.0 - np.stack(self.gallery) @ (vectors[0] / np.linalg.norm(vectors[0]))
        order = np.argsort(distances)[:limit]
        return [(self.subjects[i], float(distances[i])) for i in order if distances[i] <= threshold]


def pick_photos(datasets: Path, anchor: InProcess, count: int, samples: Path) -> list[Path]:
    """The first ``count`` colour photos in which the detector finds exactly one face."""
    candidates = sorted((datasets / "deepface_unit").glob("*/*.jpg")) + sorted(
        (datasets / "face_recognition_examples").glob("*/*.jpg")
    )
    if not candidates:
        print(f"no photos under {datasets}; using the package-shipped samples", file=sys.stderr)
        candidates = [samples / n for n in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")] * 5
    chosen: list[Path] = []
    for path in candidates:
        try:
            if len(anchor.faces(path.read_bytes())) == 1:
                chosen.append(path)
        except CandorError:  # a mislabelled WebP, say: the stack would refuse it too
            continue
        if len(chosen) == count:
            break
    return chosen


def timed(call: Callable[[], object]) -> float:
    """Milliseconds one call takes."""
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="alternate photo by photo (each side then starts with the other's data in the CPU caches) "
        "instead of alternating whole passes over the 20 photos",
    )
    parser.add_argument("--detector-threads", type=int, help="the stack's CANDOR_DETECTOR_THREADS")
    args = parser.parse_args()

    samples = fetch(ROOT / ".cache" / "samples")
    anchor = InProcess()
    photos = pick_photos(args.datasets, anchor, args.photos, samples)
    # Every service exports its spans to the bench's receiver, which splits each search by them.
    with tempfile.TemporaryDirectory(prefix="candor-bench-") as data_dir, SpanReceiver() as receiver:
        # The default policy, with a quota no run reaches: each search still pays for the quota's
        # read of the audit chain, as in production.
        policy = Path(data_dir) / "bench-policy.yaml"
        policy.write_text(
            DEFAULT_POLICY_YAML.replace("searches_per_user_per_day: 200", "searches_per_user_per_day: 100000")
        )
        environment = receiver.environment()
        if args.detector_threads is not None:
            environment["CANDOR_DETECTOR_THREADS"] = str(args.detector_threads)
        stack = LocalStack(Path(data_dir) / "stack", policy=policy, extra_env=environment)
        state = stack.up()
        try:
            with GatewayClient(state.gateway, stack.token()) as client:
                gallery = [("obama", samples / "obama.jpg", None), ("biden", samples / "biden.jpg", None)]
                gallery += [(f"t1-{i}", samples / "t1.jpg", i) for i in range(6)]
                for subject, path, face in gallery:
                    client.enroll(path, subject, face)
                    anchor.enroll(subject, anchor.faces(path.read_bytes())[face or 0])
                probes = [path.read_bytes() for path in photos]
                for data in probes[:2]:  # warm both paths
                    client.search(data, "BENCH-1", "investigation", authorisation="BENCH")
                    anchor.search(data)
                stack_ms: list[float] = []
                anchor_ms: list[float] = []
                anchor.parts.clear()
                for _ in range(args.rounds):
                    if args.interleave:
                        for data in probes:
                            stack_ms.append(
                                timed(
                                    lambda data=data: client.search(
                                        data, "BENCH-1", "investigation", authorisation="BENCH"
                                    )
                                )
                            )
                            anchor_ms.append(timed(lambda data=data: anchor.search(data)))
                    else:
                        stack_ms += [
                            timed(lambda d=d: client.search(d, "BENCH-1", "investigation", authorisation="BENCH"))
                            for d in probes
                        ]
                        anchor_ms += [timed(lambda d=d: anchor.search(d)) for d in probes]
            time.sleep(1)  # the services export every 0.1 s
        finally:
            stack.down()
        searches = trace_parts(receiver.spans(), SEARCH_SPAN)
        parts = median_parts(searches[2:])  # not the two warm-up searches

    stack_p50, anchor_p50 = statistics.median(stack_ms), statistics.median(anchor_ms)
    mode = "photo by photo" if args.interleave else "pass by pass"
    print(f"photos: {len(photos)} x {args.rounds} rounds, alternating {mode}, gallery of 8 faces")
    print(f"stack Search p50     {stack_p50:8.1f} ms   (p90 {np.percentile(stack_ms, 90):.1f})")
    print(f"in-process p50       {anchor_p50:8.1f} ms   (p90 {np.percentile(anchor_ms, 90):.1f})")
    print(f"ratio stack / in-process: {stack_p50 / anchor_p50:.3f}  (goal <= 1.10)")
    print(
        f"median ms a search by part, from {len(searches) - 2} searches' spans (each call the gateway made: "
        "the answering service's own handling, its own publishes, and the hop around them):"
    )
    for name, ms in parts:
        print(f"  {name:<34} {ms:6.1f}")
    total = dict(parts)["total"]
    print(f"  {'client, gRPC and transport':<34} {stack_p50 - total:6.1f}   (the client's p50 less the gateway's span)")
    anchor_parts = {
        name: statistics.median(search[name] for search in anchor.parts) for name in ("decode and detect", "embed")
    }
    print("in-process, median ms a search: " + ", ".join(f"{name} {ms:.1f}" for name, ms in anchor_parts.items()))


if __name__ == "__main__":
    main()

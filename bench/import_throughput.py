"""Bulk import throughput: the JetStream pipeline with one and with two workers of each kind, beside
the same detection and embedding called in-process (the anchor), on the same photos, in one run.

    .venv/bin/python bench/import_throughput.py --photos 200 --rounds 2

The photos are the package-shipped faces (obama x3, biden), each cropped, scaled to 600 px wide
and compressed 50 ways, so every photo is distinct and has one face. Each stack run starts a fresh
local stack (its start-up is not timed) and imports through the gateway, as `candor gallery import`
does; the time runs from the first photo sent to the last result. "Two workers" is two detectors
and two embedders; the matcher stays one process, because the embedded gallery's shard belongs to
one process (with a Qdrant server, matchers scale out too). The anchor runs the detector and
embedder code of the services with the default model (YuNet, SFace) in this process, one photo
after another.
"""

from __future__ import annotations

import argparse
import io
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from fetch_sample_images import fetch  # noqa: E402
from proc_cpu import cpu_seconds  # noqa: E402

from candor_cli import LocalStack  # noqa: E402
from candor_cli.gallery import read_source, run_import  # noqa: E402
from candor_client import GatewayClient  # noqa: E402
from candor_kit.cores import usable_cores  # noqa: E402

BASES = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")


def make_photos(samples: Path, folder: Path, count: int) -> Path:
    """``count`` distinct one-face photos in ``<subject>/<image>`` folders."""
    per_base = -(-count // len(BASES))
    made = 0
    for name in BASES:
        image = Image.open(samples / name).convert("RGB")
        image = image.resize((600, round(600 * image.height / image.width)))
        subject = folder / name.removesuffix(".jpg")
        subject.mkdir(parents=True, exist_ok=True)
        for variant in range(per_base):
            if made == count:
                break
            crop = image.crop((variant % 7 * 3, variant // 7 * 3, image.width - variant % 5 * 3, image.height))
            buffer = io.BytesIO()
            crop.save(buffer, format="JPEG", quality=60 + variant % 40)
            (subject / f"v{variant:03d}.jpg").write_bytes(buffer.getvalue())
            made += 1
    return folder


def anchor(source: Path) -> float:
    """Photos per second with the services' detection and embedding of the default model (YuNet
    and SFace) called in this process, one photo after another."""
    from candor_faces.decoding import DecodeLimits, decode_image
    from candor_faces.detection import build_detector
    from candor_faces.embedding import build_engine

    detector, _ = build_detector("sface")
    embedder = build_engine("sface", None, None)
    photos = read_source(source)
    start = time.perf_counter()
    for photo in photos:
        faces = detector.detect(decode_image(photo.path.read_bytes(), DecodeLimits()))
        embedder.embed([faces[0].chip])
    return len(photos) / (time.perf_counter() - start)


def cpu_by_process(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each of the stack's processes, replicas summed under their service."""
    totals: dict[str, float] = {}
    for key, pid in pids.items():
        name = key.split("#")[0]
        totals[name] = totals.get(name, 0.0) + cpu_seconds(pid)
    return totals


def naming_records(stack: LocalStack) -> int:
    """The audit chain's records naming the import's enrolled photos (the matcher's events)."""
    with sqlite3.connect(stack.data / "audit" / "audit.db") as db:
        kinds = ("gallery.import_enrolled", "enroll.completed")  # the second: the matcher before issue 27
        return int(db.execute("SELECT COUNT(*) FROM audit_record WHERE kind IN (?, ?)", kinds).fetchone()[0])


def pipeline(source: Path, replicas: int, data: Path) -> tuple[float, dict[str, float]]:
    """Photos per second through a fresh local stack with ``replicas`` detectors and embedders,
    and each service's CPU milliseconds per photo over the import (and, under ``records``, the
    audit records naming the photos, a photo)."""
    stack = LocalStack(data)
    stack.up()
    try:
        for _ in range(replicas - 1):
            stack.add_replica("detector")
            stack.add_replica("embedder")
        state = stack.state()
        assert state is not None
        with GatewayClient(state.gateway, stack.token()) as client:
            before = cpu_by_process(state.pids)
            client_before = time.process_time()
            start = time.perf_counter()
            status = run_import(client, source, progress=False)
            elapsed = time.perf_counter() - start
            client_cpu = time.process_time() - client_before
            after = cpu_by_process(state.pids)
        if status.enrolled != status.record.total:
            raise SystemExit(f"only {status.enrolled} of {status.record.total} photos were enrolled")
        total = status.record.total
        per_photo = {name: 1000 * (after[name] - before[name]) / total for name in after}
        per_photo["client"] = 1000 * client_cpu / total
        # The events are on the audit stream before the photos' results; the chain trails a little.
        counted, previous = naming_records(stack), -1
        while counted != previous:
            time.sleep(0.5)
            counted, previous = naming_records(stack), counted
        per_photo["records"] = counted / total
        return total / elapsed, per_photo
    finally:
        stack.down()


def print_cpu(label: str, per_photo: dict[str, float]) -> None:
    """Each process's CPU milliseconds per photo, largest first, and their sum; the audit records
    naming the photos, a photo."""
    cpu = {name: ms for name, ms in per_photo.items() if name != "records"}
    parts = ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(cpu.items(), key=lambda kv: -kv[1]))
    named = f"; {per_photo['records']:.2f} audit records naming them a photo" if "records" in per_photo else ""
    print(f"  {label}: {sum(cpu.values()):.1f} ms of CPU a photo ({parts}){named}")


#: The services that scale out with replicas; the others run once (the matcher owns the embedded
#: gallery; nats-server, gateway and audit are shared by every worker).
SCALED = ("detector", "embedder")


def estimate(per_photo: dict[str, float], replicas: int) -> str:
    """Photos per second when each process has a core of its own: the slowest process bounds it,
    the detectors and embedders sharing their work among ``replicas``."""
    rates = {
        name: 1000 * (replicas if name in SCALED else 1) / ms
        for name, ms in per_photo.items()
        if name not in ("client", "review") and ms > 0
    }
    bound = min(rates, key=lambda name: rates[name])
    return f"about {rates[bound]:.0f} photos/s, bound by the {bound}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="rounds, each running every variant once")
    args = parser.parse_args()

    samples = fetch(ROOT / ".cache" / "samples")
    runs: dict[str, list[float]] = {"anchor": [], "1 worker": [], "2 workers": []}
    cpu: dict[str, list[dict[str, float]]] = {"1 worker": [], "2 workers": []}
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="candor-import-bench-") as tmp:
        source = make_photos(samples, Path(tmp) / "photos", args.photos)
        for round_ in range(args.rounds):
            anchor_cpu = time.process_time()
            runs["anchor"].append(anchor(source))
            anchor_ms = 1000 * (time.process_time() - anchor_cpu) / args.photos
            for name, replicas in (("1 worker", 1), ("2 workers", 2)):
                rate, per_photo = pipeline(source, replicas, Path(tmp) / f"{replicas}-{round_}")
                runs[name].append(rate)
                cpu[name].append(per_photo)
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items()), flush=True)
            print(f"  anchor: {anchor_ms:.1f} ms of CPU a photo", flush=True)
            for name, measured in cpu.items():
                print_cpu(name, measured[-1])
    best = {name: max(values) for name, values in runs.items()}
    print(f"\n{args.photos} photos, best of {args.rounds} rounds (photos per second):")
    for name, value in best.items():
        print(f"  {name:<18} {value:7.2f}   (median {statistics.median(runs[name]):.2f})")
    print(f"two workers / one worker:            {best['2 workers'] / best['1 worker']:.2f}  (goal >= 1.3)")
    print(f"one worker / in-process anchor:      {best['1 worker'] / best['anchor']:.2f}")
    for sample in (*cpu["1 worker"], *cpu["2 workers"]):
        sample.pop("records", None)
    stack_ms = statistics.median(sum(sample.values()) - sample["client"] for sample in cpu["1 worker"])
    cores = usable_cores()
    ceiling = 1000 * cores / stack_ms
    print(f"the stack's CPU: {stack_ms:.1f} ms a photo; on {cores} cores at most {ceiling:.1f} photos/s")
    per_process = {name: statistics.median(sample[name] for sample in cpu["1 worker"]) for name in cpu["1 worker"][0]}
    for replicas in (1, 2, 4):
        guess = estimate(per_process, replicas)
        print(f"separate machines, a core per process, {replicas} detector(s) and embedder(s): {guess}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

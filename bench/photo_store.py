"""What the photo store adds to an enrolment or a search: encrypted put and get through
``PhotoStore`` against the same bytes put and got in the same JetStream object store unencrypted.

Both sides run on one real nats-server (file storage) on loopback, alternating photo by photo so
machine noise hits both alike. The photos are the package-shipped samples (20 to 300 kB JPEGs),
each stored under a fresh name every round. With ``--large`` the photo is one 2.5 MB photo instead
(three chunks of the store's 1 MiB; a phone camera's full-size JPEG), where the two reads differ
most: the store asks for each chunk, nats-py's ``get`` streams them through a consumer.

    python bench/photo_store.py [--rounds 20] [--large]

Prints the p50 of a put and of a get on each side and their ratios (store / plain object store).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from fetch_sample_images import fetch  # noqa: E402

from candor_cli.processes import free_port, start_nats_server  # noqa: E402
from candor_gateway.photos import PhotoHeader, PhotoStore  # noqa: E402
from candor_kit import Bus  # noqa: E402
from candor_kit.aes_keys import generate_aes_key, read_aes_key  # noqa: E402

PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "t1.jpg")


async def measure(photos: list[bytes], rounds: int, folder: Path) -> dict[str, list[float]]:
    """Seconds per put and per get, on each side."""
    port = free_port()
    server = start_nats_server(folder / "nats", port)
    times: dict[str, list[float]] = {"store put": [], "store get": [], "plain put": [], "plain get": []}
    try:
        bus = await Bus.connect(f"nats://127.0.0.1:{port}", "bench-photo-store")
        key = folder / "photo-key"
        key.write_bytes(generate_aes_key())
        store = PhotoStore(read_aes_key(key, "photo key"))
        await store.open(bus)
        plain = await bus.jetstream.create_object_store("BENCH_PLAIN")
        for _ in range(rounds):
            for image in photos:
                name = str(uuid.uuid4())
                header = PhotoHeader("gallery", name, "00" * 32, subject_id="bench", origin="enroll")
                started = time.perf_counter()
                await store.put(header, image)
                times["store put"].append(time.perf_counter() - started)
                started = time.perf_counter()
                await plain.put(f"gallery/{name}", image)
                times["plain put"].append(time.perf_counter() - started)
                started = time.perf_counter()
                kept = await store.get("gallery", name)
                times["store get"].append(time.perf_counter() - started)
                started = time.perf_counter()
                raw = await plain.get(f"gallery/{name}")
                times["plain get"].append(time.perf_counter() - started)
                assert kept is not None and kept.image == image == raw.data
        await bus.close()
    finally:
        server.terminate()
        server.wait(10)
    return times


def main() -> int:
    """Run both sides and print the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--large", action="store_true", help="one 2.5 MB photo instead of the samples")
    args = parser.parse_args()
    if args.large:
        photos = [os.urandom(2_500_000)]  # encryption and storage do not look inside the JPEG
    else:
        samples = fetch(ROOT / ".cache" / "samples")
        photos = [(samples / name).read_bytes() for name in PHOTOS]
    with tempfile.TemporaryDirectory(prefix="candor-bench-photos-") as scratch:
        times = asyncio.run(measure(photos, args.rounds, Path(scratch)))
    sizes = ", ".join(f"{len(p) // 1024} kB" for p in photos)
    print(f"{len(photos)} photos ({sizes}), {args.rounds} rounds, one nats-server (file storage) on loopback")
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    for name, value in medians.items():
        print(f"  {name:<10} p50 {value:7.2f} ms")
    for action in ("put", "get"):
        print(f"  {action}: store / plain object store = {medians[f'store {action}'] / medians[f'plain {action}']:.3f}")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

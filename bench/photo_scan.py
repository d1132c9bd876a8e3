"""What a scan of the photo store's headers holds and takes: a subject's expunge (its photos with
no record) and the probe retention sweep read every object's header of the bucket.

The anchor is what the store did before: nats-py's ``ObjectStore.list``, which holds every object's
info at once, then a filter. Against it, ``PhotoStore.read_headers`` with the expunge's filter,
which keeps only the headers it matches as they stream past. Both read the same objects, written
once on one real nats-server (file storage, loopback): ``--objects`` gallery photos' headers
(64-byte bodies, each of its own subject). Each side runs in a process of its own, twice,
alternating, so its peak memory is its own.

    python bench/photo_scan.py [--objects 50000]

Prints each side's seconds and peak memory allocated by Python during the scan (tracemalloc, which
slows both sides alike), and their ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

from candor_cli.processes import free_port, start_nats_server
from candor_gateway.photos import PhotoHeader, PhotoStore
from candor_kit import Bus

WRITERS = 64  # puts in flight while the objects are written


async def write(url: str, objects: int) -> None:
    """The bucket's objects, stored as the gateway stores a photo: tiny bodies, one subject each."""
    bus = await Bus.connect(url, "bench-photo-scan")
    store = PhotoStore(bytes(32))
    await store.open(bus)
    places = asyncio.Semaphore(WRITERS)

    async def put(index: int) -> None:
        header = PhotoHeader("gallery", str(uuid.uuid4()), "ab" * 32, subject_id=f"S-{index}", origin="enroll")
        async with places:
            await store.put(header, os.urandom(64))

    started = time.perf_counter()
    await asyncio.gather(*(put(index) for index in range(objects)))
    print(f"wrote {objects} objects in {time.perf_counter() - started:.1f} s", flush=True)
    await bus.close()


async def scan(url: str, side: str) -> None:
    """One scan, as the expunge of subject S-7 reads the store; prints seconds, peak memory and matches."""
    bus = await Bus.connect(url, f"bench-photo-scan-{side}")
    store = PhotoStore(bytes(32))
    await store.open(bus)
    tracemalloc.start()
    started = time.perf_counter()
    if side == "list":
        infos = await store.bucket.list(ignore_deletes=True)
        matched = [PhotoHeader.decode(i.description or "") for i in infos if (i.name or "").startswith("gallery/")]
        matched = [h for h in matched if h.subject_id == "S-7"]
    else:
        matched, _ = await store.read_headers("gallery", lambda h: h.subject_id == "S-7")
    seconds = time.perf_counter() - started
    grown_mib = tracemalloc.get_traced_memory()[1] / (1 << 20)
    tracemalloc.stop()
    print(f"{seconds:.3f} {grown_mib:.1f} {len(matched)}")
    await bus.close()


def main() -> int:
    """Write the objects, then scan them from each side in turn; print the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=50_000)
    parser.add_argument("--scan", choices=("list", "stream"), help=argparse.SUPPRESS)  # one side, in its process
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scan:
        asyncio.run(scan(args.url, args.scan))
        return 0
    with tempfile.TemporaryDirectory(prefix="candor-bench-scan-") as scratch:
        port = free_port()
        server = start_nats_server(Path(scratch), port)
        url = f"nats://127.0.0.1:{port}"
        try:
            asyncio.run(write(url, args.objects))
            runs: dict[str, list[tuple[float, float]]] = {"list": [], "stream": []}
            for _ in range(2):
                for side in runs:
                    out = subprocess.run(
                        [sys.executable, __file__, "--scan", side, "--url", url],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout.split()
                    seconds, grown, matched = float(out[-3]), float(out[-2]), int(out[-1])
                    assert matched == 1, f"{side} found {matched} photos of S-7"
                    runs[side].append((seconds, grown))
        finally:
            server.terminate()
            server.wait(10)
    print(f"{args.objects} gallery objects, one nats-server (file storage) on loopback; two scans a side")
    medians = {
        side: (statistics.median(s for s, _ in r), statistics.median(g for _, g in r)) for side, r in runs.items()
    }
    for side, label in (("list", "nats-py list, then a filter (before)"), ("stream", "read_headers, streamed")):
        print(f"  {label:<40} {medians[side][0]:7.2f} s   peak Python memory {medians[side][1]:7.1f} MiB")
    print(
        f"  streamed / list: time {medians['stream'][0] / medians['list'][0]:.3f}, "
        f"memory {medians['stream'][1] / max(medians['list'][1], 0.1):.3f}"
    )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the matcher's claim of an import photo costs: ``ItemRegister.claim`` (read the gateway's
register entry, then a compare-and-set write marking it claimed) beside the anchor, the check the
matcher made before (read the entry and compare its digest), alternating photo by photo on one real
nats-server (file storage) on loopback, so machine noise hits both alike.

    .venv/bin/python bench/import_claim.py [--photos 2000]

Prints the p50 and p95 of each in milliseconds, the ratio, and the load average. For scale: a photo
costs an import 60 to 100 ms of CPU through the pipeline (bench/RESULTS.md, import throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import nats

from candor.ingest.v1 import ingest_pb2
from candor_cli.processes import free_port, start_nats_server
from candor_kit import Bus
from candor_kit.ingest import ItemRegister, item_digest, item_key
from candor_kit.subjects import IMPORT_ITEMS_BUCKET

SHA256 = "ab" * 32


async def measure(photos: int, folder: Path) -> dict[str, list[float]]:
    """Seconds per photo on each side."""
    server = start_nats_server(folder, port := free_port())
    try:
        bus = Bus(await nats.connect(f"nats://127.0.0.1:{port}"))
        register = ItemRegister(bus)
        await register.ensure()
        bucket = await bus.jetstream.key_value(IMPORT_ITEMS_BUCKET)
        times: dict[str, list[float]] = {"claim": [], "check": []}
        for number in range(photos):
            claimed = ingest_pb2.ItemRef(import_id="bench-claim", item=2 * number, subject_id=f"S-{number}")
            checked = ingest_pb2.ItemRef(import_id="bench-claim", item=2 * number + 1, subject_id=f"S-{number}")
            await register.register(claimed, SHA256)
            await register.register(checked, SHA256)
            start = time.perf_counter()
            problem, _ = await register.claim(claimed, SHA256)
            times["claim"].append(time.perf_counter() - start)
            assert not problem, problem
            start = time.perf_counter()
            entry = await bucket.get(item_key(checked))  # the anchor: the check before claims
            assert (entry.value or b"").decode() == item_digest(checked, SHA256)
            times["check"].append(time.perf_counter() - start)
        await bus.close()
        return times
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=2000)
    args = parser.parse_args()
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as scratch:
        times = asyncio.run(measure(args.photos, Path(scratch)))
    p50 = {}
    for name, label in (("claim", "claim (as it is)"), ("check", "check (anchor)")):
        figures = sorted(times[name])
        p50[name] = statistics.median(figures)
        p95 = figures[int(len(figures) * 0.95)]
        print(f"{label}: p50 {p50[name] * 1e3:.3f} ms, p95 {p95 * 1e3:.3f} ms a photo")
    print(f"ratio claim / check (p50): {p50['claim'] / p50['check']:.2f}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

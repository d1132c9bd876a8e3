"""What a Qdrant Edge write costs the matcher: CPU and wall time a point when points are written
and flushed one at a time or in groups (the matcher's group commit), and how long a flush keeps
other Python threads waiting (the search threads beside an import).

    .venv/bin/python bench/shard_writes.py [--points 400]

The shard is the matcher's own configuration (`candor_matcher.edge_backend.shard_config`, SFace's
128 dimensions, cosine) in a temporary folder, on the same disk as the rest of the bench.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from qdrant_edge import EdgeShard, Point, UpdateOperation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services" / "matcher"))

from candor_matcher.edge_backend import shard_config  # noqa: E402

DIMENSION = 128


def points(rng: np.random.Generator, count: int) -> list[Point]:
    """``count`` random unit vectors with a subject id, as enrolments."""
    vectors = rng.standard_normal((count, DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [Point(str(uuid.uuid4()), v.tolist(), {"subject_id": "s", "origin": "import/1"}) for v in vectors]


def group_costs(shard: EdgeShard, total: int, group: int) -> tuple[float, float]:
    """CPU and wall milliseconds a point when ``total`` points are written ``group`` at a time,
    each group one update and one flush."""
    rng = np.random.default_rng(group)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(total // group):
        shard.update(UpdateOperation.upsert_points(points(rng, group)))
        shard.flush()
    done = total // group * group
    return 1000 * (time.process_time() - cpu) / done, 1000 * (time.perf_counter() - wall) / done


def stalls(shard: EdgeShard, flush: bool, seconds: float = 5.0) -> dict[str, float]:
    """A thread writes groups of 4 (and flushes them, when ``flush``) while this thread spins a
    pure-Python loop; the loop's gaps over 2 ms are the times a write kept it from running."""
    stop = threading.Event()
    writes: list[float] = []

    def writer() -> None:
        rng = np.random.default_rng(7)
        while not stop.is_set():
            start = time.perf_counter()
            shard.update(UpdateOperation.upsert_points(points(rng, 4)))
            if flush:
                shard.flush()
            writes.append(time.perf_counter() - start)
            time.sleep(0.001)

    thread = threading.Thread(target=writer)
    thread.start()
    gaps, last = [], time.perf_counter()
    until = last + seconds
    while (now := time.perf_counter()) < until:
        gaps.append(now - last)
        last = now
    stop.set()
    thread.join()
    gap_ms = np.asarray(gaps) * 1000
    return {
        "writes": len(writes),
        "write_p50_ms": 1000 * float(np.median(writes)),
        "stalls_over_2ms": int((gap_ms > 2).sum()),
        "longest_stall_ms": float(gap_ms.max()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=400, help="points written at each group size")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="candor-shard-bench-") as folder:
        shard = EdgeShard.create(folder, shard_config(DIMENSION, "cosine"))
        shard.update(UpdateOperation.upsert_points(points(np.random.default_rng(0), 50_000)))
        shard.flush()
        print(f"shard of 50,000 points; {args.points} more written at each group size, each group flushed:")
        baseline = None
        for group in (1, 4, 16, 64):
            cpu, wall = group_costs(shard, args.points, group)
            baseline = baseline or cpu
            ratio = baseline / cpu
            print(f"  group of {group:>2}: {cpu:6.3f} ms CPU, {wall:6.3f} ms wall a point ({ratio:4.1f}x less CPU)")
        print("a pure-Python loop beside a thread writing groups of 4 for 5 s:")
        for flush in (True, False):
            found = stalls(shard, flush)
            label = "with a flush each" if flush else "without flushing"
            print(
                f"  {label:<18} {found['writes']} writes (p50 {found['write_p50_ms']:.2f} ms), "
                f"{found['stalls_over_2ms']} stalls over 2 ms, longest {found['longest_stall_ms']:.1f} ms"
            )
        shard.close()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

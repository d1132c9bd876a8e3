"""The models' thread pools under a CPU quota: sized to the quota, as Candor sizes them, against
the libraries' own defaults (the anchors), side by side in real cgroups.

- ``onnx``: the embedder's SFace on onnxruntime, its pool sized by
  ``candor_kit.model_pack.session_options`` against onnxruntime's default (a thread per physical
  core of the host), one chip a call.
- ``faiss``: the matcher's fast-scan index (``candor_matcher.fastscan``) of ``--faces`` synthetic
  faces, OpenMP sized by ``candor_kit.cores.openmp_sized_to_quota`` against libgomp's default (every
  core of the affinity mask), one search (top 50) a call.

Each side runs in a fresh process placed in a cgroup of its own with ``--quota`` cores of CPU quota
(cgroup v1's ``cpu.cfs_quota_us`` or v2's ``cpu.max``, whichever this machine has), back to back (a
busy pod) and with a pause between calls (a quiet one); the sides alternate round by round. Needs
root (it makes the cgroups, and removes them).

    python bench/quota_pools.py [--part onnx,faiss] [--quota 1] [--calls 300] [--rounds 2]

Prints each side's p50, p90 and p99 and calls a second, the ratio of the p99s (sized / default),
and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "scripts"))

from cgroups import cpu_cgroup  # noqa: E402

# Each runs in the cgroup: the child joins it, then loads the model as the service does, and
# measures ``calls`` calls back to back, then 10 ms apart.
MEASURE = """
out = {"threads": len(os.listdir("/proc/self/task"))}
for gap in (0.0, 0.01):
    times = []
    for _ in range(int(sys.argv[3])):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
        if gap:
            time.sleep(gap)
    out[str(gap)] = {"times": times, "busy_s": sum(times)}
print(json.dumps(out))
"""
ONNX = (
    """
import json, os, sys, time
open(sys.argv[1], "w").write(str(os.getpid()))
import numpy as np
import candor_kit.model_pack as model_pack
if sys.argv[2] == "default":  # onnxruntime's own sizing: the host's physical cores
    sized = model_pack.session_options
    def host_sized():
        options = sized()
        options.intra_op_num_threads = 0
        return options
    model_pack.session_options = host_sized
from candor_faces.embedding import build_engine
engine = build_engine("sface", None, None)
chip = np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8)
def call():
    engine.embed([chip])
for _ in range(20):
    call()
"""
    + MEASURE
)
FAISS = (
    """
import json, os, sys, time
open(sys.argv[1], "w").write(str(os.getpid()))
if sys.argv[2] == "default":  # libgomp's own sizing: every core of the affinity mask
    os.environ["OMP_NUM_THREADS"] = str(len(os.sched_getaffinity(0)))
import numpy as np
from candor_kit.cores import one_blas_thread
from candor_matcher.fastscan import FastScanIndex
one_blas_thread()  # as every service holds numpy's BLAS at start (run_service)
rng = np.random.default_rng(0)
faces = int(sys.argv[4])
index = FastScanIndex(128, "cosine")
for start in range(0, faces, 50_000):
    block = rng.standard_normal((min(50_000, faces - start), 128)).astype(np.float32)
    ids = [f"{n:032x}" for n in range(start, start + len(block))]
    index.add(ids, ids, block, replace=False)
probes = rng.standard_normal((64, 128)).astype(np.float32)
turn = iter(range(10**9))
def call():
    index.nearest(probes[next(turn) % 64].tolist(), 50, 2.0)
for _ in range(20):
    call()
"""
    + MEASURE
)


def percentile(times: list[float], share: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


def run_side(part: str, side: str, quota: float, calls: int, faces: int) -> dict:
    with cpu_cgroup(quota) as procs:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        env.pop("OMP_NUM_THREADS", None)
        out = subprocess.run(
            [sys.executable, "-c", CHILDREN[part], str(procs), side, str(calls), str(faces)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


CHILDREN = {"onnx": ONNX, "faiss": FAISS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="onnx,faiss", help="which pools: onnx, faiss or both")
    parser.add_argument("--faces", type=int, default=300_000, help="the fast-scan index's size")
    parser.add_argument("--quota", type=float, default=1.0, help="cores of CPU quota each side's cgroup gets")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("this bench makes cgroups: run it as root", file=sys.stderr)
        return 2
    print(f"load average at the start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores, quota {args.quota} cores")
    for part, round_number in [(part, n) for part in args.part.split(",") for n in range(1, args.rounds + 1)]:
        p99 = {}
        for side in ("default", "sized"):
            found = run_side(part, side, args.quota, args.calls, args.faces)
            for gap, label in (("0.0", "back to back"), ("0.01", "10 ms apart")):
                times = found[gap]["times"]
                rate = len(times) / found[gap]["busy_s"]
                p99[(side, gap)] = percentile(times, 0.99)
                print(
                    f"{part} round {round_number} {side:8s} ({found['threads']} threads) {label:13s} "
                    f"p50 {percentile(times, 0.5):6.2f}  p90 {percentile(times, 0.9):6.2f}  "
                    f"p99 {percentile(times, 0.99):6.2f} ms  {rate:5.1f} calls/s"
                )
        for gap, label in (("0.0", "back to back"), ("0.01", "10 ms apart")):
            ratio = p99[("sized", gap)] / p99[("default", gap)]
            print(f"{part} round {round_number} p99 sized / default, {label}: {ratio:.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

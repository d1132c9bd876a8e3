"""The embedder's model under a CPU quota: onnxruntime's pool sized to the quota, as Candor sizes it
(``candor_kit.model_pack.session_options``), against onnxruntime's own default (a thread per
physical core of the host, the anchor), side by side in real cgroups.

Each side runs SFace on one chip at a time in a fresh process placed in a cgroup of its own with
``--quota`` cores of CPU quota (cgroup v1's ``cpu.cfs_quota_us`` or v2's ``cpu.max``, whichever
this machine has), back to back (a busy pod) and with a pause between calls (a quiet one); the
sides alternate round by round. Needs root (it makes the cgroups, and removes them).

    python bench/onnx_quota.py [--quota 1] [--calls 300] [--rounds 2]

Prints each side's p50, p90 and p99 and calls a second, the ratio of the p99s (sized / default),
and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from candor_kit.cores import CGROUP_ROOT  # noqa: E402

# Runs in the cgroup: the child joins it, then loads SFace as the embedder does.
CHILD = """
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
for _ in range(20):
    engine.embed([chip])
out = {"threads": len(os.listdir("/proc/self/task"))}
for gap in (0.0, 0.01):
    times, started = [], time.perf_counter()
    for _ in range(int(sys.argv[3])):
        t = time.perf_counter()
        engine.embed([chip])
        times.append(time.perf_counter() - t)
        if gap:
            time.sleep(gap)
    out[str(gap)] = {"times": times, "busy_s": sum(times)}
print(json.dumps(out))
"""


def make_cgroup(quota: float) -> tuple[Path, Path]:
    """A new cgroup with ``quota`` cores; (its folder, the file a process joins it through)."""
    name = f"candor-bench-{uuid.uuid4().hex[:8]}"
    v1 = CGROUP_ROOT / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        group = v1 / name
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text(str(int(quota * 100000)))
        return group, group / "cgroup.procs"
    group = CGROUP_ROOT / name
    group.mkdir()
    (group / "cpu.max").write_text(f"{int(quota * 100000)} 100000")
    return group, group / "cgroup.procs"


def percentile(times: list[float], share: float) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


def run_side(side: str, quota: float, calls: int) -> dict:
    group, procs = make_cgroup(quota)
    try:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(procs), side, str(calls)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        group.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quota", type=float, default=1.0, help="cores of CPU quota each side's cgroup gets")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("this bench makes cgroups: run it as root", file=sys.stderr)
        return 2
    print(f"load average at the start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores, quota {args.quota} cores")
    for round_number in range(1, args.rounds + 1):
        p99 = {}
        for side in ("default", "sized"):
            found = run_side(side, args.quota, args.calls)
            for gap, label in (("0.0", "back to back"), ("0.01", "10 ms apart")):
                times = found[gap]["times"]
                rate = len(times) / found[gap]["busy_s"]
                p99[(side, gap)] = percentile(times, 0.99)
                print(
                    f"round {round_number} {side:8s} ({found['threads']} threads) {label:13s} "
                    f"p50 {percentile(times, 0.5):6.2f}  p90 {percentile(times, 0.9):6.2f}  "
                    f"p99 {percentile(times, 0.99):6.2f} ms  {rate:5.1f} calls/s"
                )
        for gap, label in (("0.0", "back to back"), ("0.01", "10 ms apart")):
            ratio = p99[("sized", gap)] / p99[("default", gap)]
            print(f"round {round_number} p99 sized / default, {label}: {ratio:.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

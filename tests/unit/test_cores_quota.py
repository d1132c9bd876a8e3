"""The cores a service sizes its threads to: its affinity capped by its cgroup's CPU quota, on
cgroup v2 and v1 alike, including a limit set on a parent cgroup.

Why v1 too: Docker and Kubernetes on a cgroup v1 host (this test machine's kind) put a container's
``--cpus`` or a pod's CPU limit in ``cpu.cfs_quota_us``, where a reader of ``cpu.max`` alone saw no
limit and sized onnxruntime's and OpenCV's pools to every core of the node.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cgroups import cpu_cgroup, cpu_hierarchy

from candor_kit.cores import cgroup_quota, usable_cores

CORES = len(os.sched_getaffinity(0))


def tree(root: Path, files: dict[str, str]) -> Path:
    """A cgroup file system under ``root``: relative path -> contents."""
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_cgroup_v2_in_a_container_its_own_cpu_max(tmp_path: Path) -> None:
    root = tree(tmp_path, {"cpu.max": "150000 100000\n", "proc": "0::/\n"})
    assert cgroup_quota(root, root / "proc") == 1.5
    assert usable_cores(root, root / "proc") == min(CORES, 2)  # 1.5 cores: two threads
    (root / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(root, root / "proc") is None
    assert usable_cores(root, root / "proc") == CORES


def test_cgroup_v2_on_a_host_the_process_s_own_cgroup_and_its_parents(tmp_path: Path) -> None:
    files = {"proc": "0::/batch/candor\n", "batch/cpu.max": "50000 100000\n", "batch/candor/cpu.max": "max 100000\n"}
    root = tree(tmp_path, files)
    assert cgroup_quota(root, root / "proc") == 0.5  # the parent's limit holds for its children
    assert usable_cores(root, root / "proc") == 1


def test_cgroup_v1_cfs_quota_in_the_cpu_hierarchy(tmp_path: Path) -> None:
    files = {
        "proc": "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n0::/\n",
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
    }
    root = tree(tmp_path, files)
    assert cgroup_quota(root, root / "proc") == 1.0
    (root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(root, root / "proc") is None


def test_a_cgroup_outside_the_namespace_s_view_reads_the_root_only(tmp_path: Path) -> None:
    root = tree(tmp_path / "fs" / "cgroup", {"cpu.max": "200000 100000\n", "proc": "0::/../../elsewhere\n"})
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # what a path through .. would reach
    assert cgroup_quota(root, root / "proc") == 2.0


def test_nothing_readable_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_quota(tmp_path, tmp_path / "absent") is None
    assert usable_cores(tmp_path, tmp_path / "absent") == CORES


def run_in_one_core_cgroup(code: str) -> str:
    """Run ``code`` in a fresh interpreter inside a new real cgroup with one core of CPU quota;
    its standard output."""
    with cpu_cgroup(1.0) as procs:
        joined = f"import os; open('{procs}', 'w').write(str(os.getpid()))\n" + code
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(sys.path)}  # no OMP_NUM_THREADS
        out = subprocess.run([sys.executable, "-c", joined], capture_output=True, text=True, check=True, env=env)
    return out.stdout


needs_a_cgroup = pytest.mark.skipif(
    cpu_hierarchy() is None, reason="needs root and a cgroup hierarchy with the cpu controller"
)


@needs_a_cgroup
def test_a_process_in_a_real_cgroup_with_one_core_of_quota_sizes_to_one_core() -> None:
    out = run_in_one_core_cgroup("from candor_kit.cores import usable_cores; print(usable_cores())")
    assert int(out.split()[-1]) == 1


@needs_a_cgroup
def test_the_matcher_s_faiss_runs_openmp_on_the_quota_s_cores_on_every_thread() -> None:
    """FAISS's fast-scan runs its scan on OpenMP's pool, which libgomp sizes to the affinity mask
    when it is loaded; a search runs on a worker thread, which omp_set_num_threads from the main
    thread does not reach."""
    code = """
from concurrent.futures import ThreadPoolExecutor
import candor_matcher.fastscan
import faiss
print(faiss.omp_get_max_threads(), ThreadPoolExecutor(1).submit(faiss.omp_get_max_threads).result())
"""
    main, worker = (int(word) for word in run_in_one_core_cgroup(code).split()[-2:])
    assert (main, worker) == (1, 1)

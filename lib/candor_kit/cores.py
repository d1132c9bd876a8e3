"""How many cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (a
container's or a pod's CPU limit), so a service sizes its worker threads to what it is given."""

from __future__ import annotations

import math
import os
from pathlib import Path

from threadpoolctl import ThreadpoolController

#: Where the cgroup file systems are mounted, and where this process's cgroups are named.
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _v2_quota(folder: Path) -> float | None:
    """cgroup v2's ``cpu.max`` (``max 100000`` when unlimited) in cores."""
    text = _read(folder / "cpu.max")
    try:
        quota, period = (text or "").split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except ValueError:
        return None


def _v1_quota(folder: Path) -> float | None:
    """cgroup v1's ``cpu.cfs_quota_us`` (-1 when unlimited) over ``cpu.cfs_period_us``, in cores."""
    try:
        quota = int(_read(folder / "cpu.cfs_quota_us") or "")
        period = int(_read(folder / "cpu.cfs_period_us") or "")
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _up_from(path: str) -> list[str]:
    """A cgroup's path and each of its parents' up to the root (``""``); only the root for a cgroup
    outside this namespace's view (a path through ``..``)."""
    parts = [part for part in path.split("/") if part]
    if ".." in parts:
        return [""]
    return ["/".join(parts[:end]) for end in range(len(parts), -1, -1)]


def cgroup_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota in cores (quota over period) of this process's cgroup, or None when none is set.

    Both cgroup versions are read (v1's ``cpu.cfs_quota_us`` is where Docker and Kubernetes put a
    limit on a v1 host), in the process's own cgroup and each parent's (a parent's limit holds for
    its children): the smallest found. Inside a container the cgroup named in /proc may not be
    mounted under its own name (the container sees its cgroup as the root), so the root's file is
    read as well.
    """
    quotas: list[float] = []
    for line in (_read(proc_cgroup) or "0::/\n").splitlines():
        hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
        if hierarchy == "0" and not controllers:
            found = [_v2_quota(root / relative) for relative in _up_from(path)]
        elif "cpu" in controllers.split(","):
            mounts = [root / controllers, root / "cpu"]
            found = [_v1_quota(mount / relative) for mount in mounts for relative in _up_from(path)]
        else:
            continue
        quotas.extend(quota for quota in found if quota is not None)
    return min(quotas, default=None)


def usable_cores(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """Cores this process may run on, at least 1: the affinity mask, capped by the cgroup's CPU
    quota rounded up (a 1.5-core limit gets two threads, each running part of the time)."""
    cores = len(os.sched_getaffinity(0))
    quota = cgroup_quota(root, proc_cgroup)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def openmp_sized_to_quota() -> None:
    """Size the OpenMP pool of a library not loaded yet (FAISS's) to the cores this process may use;
    call it just before that library is imported. An operator's own ``OMP_NUM_THREADS`` is kept.

    Why here and so early: libgomp reads ``OMP_NUM_THREADS`` once, when it is loaded, and without it
    takes the affinity mask, not the cgroup's quota (a matcher limited to one core on a 16-core node
    would scan its codes on 16 threads and be throttled); ``omp_set_num_threads`` afterwards reaches
    only the thread that calls it, not the worker threads searches run on.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(usable_cores()))


def one_blas_thread() -> None:
    """Hold numpy's BLAS (OpenBLAS on its own threads) to one thread in this process.

    Why: a service's matrix products are small (the matcher rescores a few thousand faces a
    search), and OpenBLAS splits any product of a few thousand rows across its worker threads,
    which then spin for up to a tenth of a second waiting for the next one. On a machine whose
    cores the detector's and the embedder's own pools share, each search took most of a second
    core for nothing (bench/RESULTS.md, tests/e2e/test_matcher_cores.py).

    Only BLAS libraries threaded by their own pthreads are limited: one threaded by OpenMP (FAISS
    ships one) shares the OpenMP pool with FAISS's fast-scan, which a 2.5M-face search needs (10.3
    ms on one thread, 6.6 on two). The models' pools (OpenCV's, onnxruntime's) are sized by each
    service, not here.
    """
    import numpy  # noqa: F401 - loaded first: the limit reaches only libraries already loaded

    ThreadpoolController().select(threading_layer="pthreads").limit(limits=1)

"""How many cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (a
container's or a pod's CPU limit), so a service sizes its worker threads to what it is given."""

from __future__ import annotations

import math
import os
from pathlib import Path

from threadpoolctl import ThreadpoolController

#: cgroup v2's quota file for this process's cgroup (``max 100000`` when unlimited).
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_quota(cpu_max: Path = CPU_MAX) -> float | None:
    """The CPU quota in cores (``quota / period``), or None when there is none or no cgroup v2."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def usable_cores(cpu_max: Path = CPU_MAX) -> int:
    """Cores this process may run on, at least 1: the affinity mask, capped by the quota rounded up
    (a 1.5-core limit gets two threads, each running part of the time)."""
    cores = len(os.sched_getaffinity(0))
    quota = cgroup_quota(cpu_max)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


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

"""How many cores this process may use: its CPU affinity, capped by its cgroup's CPU quota (a
container's or a pod's CPU limit), so a service sizes its worker threads to what it is given."""

from __future__ import annotations

import math
import os
from pathlib import Path

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

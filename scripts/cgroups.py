"""Real cgroups with a CPU quota, for the benchmarks and tests that run a process under a limit
as a container's ``--cpus`` or a pod's CPU limit would (cgroup v1's ``cpu`` hierarchy or v2's,
whichever this machine has). Making one needs root."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def cpu_hierarchy() -> tuple[Path, str] | None:
    """Where a cgroup with a CPU quota can be made here ((folder, "v1" or "v2")), or None without
    the right to make one (not root, or an unprivileged container)."""
    v1 = ROOT / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists() and os.access(v1, os.W_OK):
        return v1, "v1"
    control = ROOT / "cgroup.subtree_control"
    if control.exists() and "cpu" in control.read_text().split() and os.access(ROOT, os.W_OK):
        return ROOT, "v2"
    return None


@contextlib.contextmanager
def cpu_cgroup(cores: float) -> Iterator[Path]:
    """A new cgroup with ``cores`` of CPU quota, removed afterwards (its processes must have ended);
    yields the file a process joins it through (write its pid to it)."""
    found = cpu_hierarchy()
    if found is None:
        raise PermissionError("making a cgroup needs root and a cgroup hierarchy with the cpu controller")
    hierarchy, version = found
    group = hierarchy / f"candor-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        quota = int(cores * PERIOD_US)
        if version == "v1":
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        yield group / "cgroup.procs"
    finally:
        group.rmdir()

"""CPU seconds from Linux's /proc, for the benchmarks and tests that set a process's CPU beside
the wall time it took (a process's, a thread's)."""

from __future__ import annotations

import os
from pathlib import Path


def stat_cpu_seconds(stat: Path) -> float:
    """User plus system CPU seconds in a ``/proc/.../stat`` file (a process's: its threads included)."""
    # The command name, in parentheses, may hold spaces: the fields are counted after its ")".
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used, its threads included."""
    return stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def thread_cpu() -> dict[str, float]:
    """CPU seconds each of this process's threads has used, by thread name (threads of one name
    summed)."""
    used: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            seconds = stat_cpu_seconds(task / "stat")
        except OSError:  # the thread ended while being read
            continue
        used[name] = used.get(name, 0.0) + seconds
    return used

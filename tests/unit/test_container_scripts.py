"""The container runs' guard against a full disk (scripts/test_containers.py), which CI's
test-bare once met: its pip install failed with "No space left on device"."""

from __future__ import annotations

import shutil
from pathlib import Path

from scripts.test_containers import free_space_problem


def test_a_disk_with_room_for_the_run_raises_no_problem(tmp_path: Path) -> None:
    assert free_space_problem(tmp_path, need_gb=0) is None


def test_a_disk_short_of_space_says_how_much_it_has_needs_and_what_to_do(tmp_path: Path) -> None:
    free_gb = shutil.disk_usage(tmp_path).free / 1e9
    problem = free_space_problem(tmp_path, need_gb=free_gb + 100)
    assert problem is not None
    assert f"{free_gb:.1f} GB free" in problem
    assert f"needs about {free_gb + 100:.0f} GB" in problem
    assert "docker image prune" in problem and "run it again" in problem

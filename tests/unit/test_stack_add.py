"""``candor stack add``: its settings are checked before any process starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CANDOR = str(Path(sys.executable).parent / "candor")


def test_a_setting_that_is_not_name_equals_value_is_refused_with_an_example(tmp_path: Path) -> None:
    result = subprocess.run(
        [CANDOR, "--data", str(tmp_path), "stack", "add", "embedder", "--set", "sface"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "give a Candor setting as NAME=VALUE, e.g. CANDOR_EMBEDDER_ENGINE=sface" in result.stderr


def test_adding_to_a_stack_that_is_not_running_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [CANDOR, "--data", str(tmp_path), "stack", "add", "embedder", "--set", "CANDOR_EMBEDDER_ENGINE=dlib"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and f"no stack is running in {tmp_path}; start one with" in result.stderr

"""scripts/system-deps.sh: on a machine that lacks the tests' Debian packages, someone who is not
root gets the one apt-get line to run, and make stops there (exit 1) before any test."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "system-deps.sh"


@pytest.fixture
def bare_path() -> Iterator[Path]:
    """A PATH holding only the shell tools the script itself runs, so every package's tool looks
    missing, and a copy of the script, in a folder anyone may read: pytest's tmp folders and a
    clone under /root are root's alone."""
    with tempfile.TemporaryDirectory(prefix="candor-bare-path-") as made:
        folder = Path(made)
        folder.chmod(0o755)
        for tool in ("grep", "id", "cat"):
            found = shutil.which(tool)
            assert found, tool
            (folder / tool).symlink_to(found)
        shutil.copy(SCRIPT, folder / SCRIPT.name)
        (folder / SCRIPT.name).chmod(0o644)
        yield folder


def _as_someone_else(command: list[str]) -> list[str]:
    """Runs as nobody when the tests run as root: the script must never install from a test."""
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail("running as root needs runuser (util-linux) to test the script as another user")
    return [runuser, "-u", "nobody", "--", *command]


@pytest.mark.parametrize(
    ("profile", "target", "packages"),
    [
        ("test", "make test", ("openssl", "docker-compose", "prometheus", "chromium", "npm", "golang-go")),
        # dockerd and debootstrap live in sbin, which the script searches too: installed here, not named.
        ("containers", "make test-containers", ("openssl", "docker-compose", "chromium", "npm")),
    ],
)
def test_a_user_who_is_not_root_gets_the_apt_get_line_and_make_stops(
    bare_path: Path, profile: str, target: str, packages: tuple[str, ...]
) -> None:
    bash = shutil.which("bash") or "/bin/bash"
    script = str(bare_path / SCRIPT.name)
    command = _as_someone_else(["/usr/bin/env", f"PATH={bare_path}", bash, script, profile])
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{target} needs Debian packages this machine lacks" in result.stderr
    line = next(text for text in result.stderr.splitlines() if "apt-get install" in text)
    assert line.strip().startswith("sudo apt-get install -y ")
    assert set(packages) <= set(line.split()), line
    if profile == "test":
        # What only the container runs need is not asked of make test.
        assert "docker.io" not in line.split() and "debootstrap" not in line.split()


def test_an_unknown_profile_is_refused_with_its_usage() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "everything"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "usage:" in result.stderr

"""Every dependency is pinned to a registry version: no lock names a local path, a file or a URL.

A fresh machine installs from the package registry alone, so a pin such as
``faiss-cpu @ file:///tmp/faiss/...whl`` (which `pip freeze` writes for a package installed from a
local wheel) works only on the machine that made it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {".git", ".venv", ".cache", "node_modules", "__pycache__", ".pytest_cache"}


def pin_files(root: Path) -> list[Path]:
    """Every lock, requirements or constraints file under ``root``, outside tool and build folders."""
    found = []
    for path in root.rglob("*"):
        if SKIPPED_DIRS.intersection(path.relative_to(root).parts) or not path.is_file():
            continue
        name = path.name.lower()
        if name.endswith(".lock") or (
            name.endswith((".txt", ".in")) and name.startswith(("requirements", "constraints"))
        ):
            found.append(path)
    return sorted(found)


def pin_problem(line: str) -> str | None:
    """Why one requirement line is not a registry pin of one version (``name==version``), or None."""
    text = line.split(" #", 1)[0].strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith("-"):
        return "a pip option (an index, a link, an editable or a nested file) points outside the registry"
    lowered = text.lower()
    if "://" in lowered or lowered.startswith("file:") or "@" in text.split(";")[0]:
        return "names a URL or a file"
    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        return "is not a requirement (a local path?)"
    if requirement.url:
        return "names a URL or a file"
    specifiers = list(requirement.specifier)
    if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
        return "is not pinned to one version with =="
    return None


def test_the_repository_has_a_lock() -> None:
    assert ROOT / "requirements.lock" in pin_files(ROOT)


@pytest.mark.parametrize("path", pin_files(ROOT), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_lock_line_is_a_registry_pin(path: Path) -> None:
    problems = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()!r} {problem}"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if (problem := pin_problem(line))
    ]
    assert not problems, "\n".join(problems)


def test_pyproject_dependencies_name_no_path_or_url() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    extras = project.get("optional-dependencies", {})
    for extra in extras.values():
        declared.extend(extra)
    # An extra may take in another of the project's own (dev = candor[e2e] + ...): no download.
    own = [line for line in declared if line.startswith(f"{project['name']}[")]
    assert all(line.removeprefix(f"{project['name']}[").removesuffix("]") in extras for line in own), own
    problems = [f"{line!r} {problem}" for line in declared if line not in own and (problem := pin_problem(line))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "line",
    [
        "faiss-cpu @ file:///tmp/faiss/faiss_cpu-1.15.1-cp310-abi3-manylinux_2_28_x86_64.whl#sha256=f2c3",
        "dlib @ https://example.org/dlib-20.0.tar.gz",
        "candor @ git+https://example.org/candor.git@main",
        "file:///tmp/wheel.whl",
        "/tmp/faiss/faiss_cpu-1.15.1-cp310-abi3-manylinux_2_28_x86_64.whl",
        "./vendor/numpy-2.4.6.tar.gz",
        "https://example.org/numpy-2.4.6-cp311-cp311-linux_x86_64.whl",
        "-e /work/candor",
        "--find-links /tmp/wheels",
        "--index-url https://mirror.example.org/simple",
        "-r other-requirements.txt",
        "numpy>=2",
        "numpy",
    ],
)
def test_a_path_a_url_or_a_loose_pin_is_refused(line: str) -> None:
    assert pin_problem(line) is not None


@pytest.mark.parametrize(
    "line", ["faiss-cpu==1.15.1", "ImageIO==2.38.1", "# a comment", "", "tomli==2.3.0 ; python_version < '3.11'"]
)
def test_a_registry_pin_passes(line: str) -> None:
    assert pin_problem(line) is None


def test_pin_files_finds_locks_and_requirements_anywhere(tmp_path: Path) -> None:
    for name in ("requirements.lock", "bench/requirements-bench.txt", "deploy/constraints.txt", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("numpy==2.4.6\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "requirements.txt").write_text("x @ file:///x\n")
    found = {str(p.relative_to(tmp_path)) for p in pin_files(tmp_path)}
    assert found == {"requirements.lock", "bench/requirements-bench.txt", "deploy/constraints.txt"}

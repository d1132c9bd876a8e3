"""Fetch the real face photos that packages ship, for the demo and the tests.

The face_recognition 1.3.0 sdist carries tests/test_images (obama*.jpg, biden.jpg, ...) and the
insightface 2.1 wheel carries insightface/data/images/t1.jpg (six people). pip fetches both from
the package registry; nothing else is contacted.

Usage: python scripts/fetch_sample_images.py DEST
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

SDIST = ("face_recognition==1.3.0", "--no-binary", ":all:")
WHEEL = ("insightface==2.1", "--only-binary", ":all:")
FROM_SDIST = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "32bit.png", "obama_partial_face.jpg")
FROM_WHEEL = ("t1.jpg",)


def fetch(dest: Path) -> Path:
    """Put the sample photos in ``dest`` (skipped when they are already there)."""
    if all((dest / name).exists() for name in FROM_SDIST + FROM_WHEEL):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for spec in (SDIST, WHEEL):
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, spec[0], *spec[1:]],
                check=True,
            )
        sdist = next(Path(tmp).glob("face_recognition-1.3.0.tar.gz"))
        with tarfile.open(sdist) as archive:
            for name in FROM_SDIST:
                member = archive.extractfile(f"face_recognition-1.3.0/tests/test_images/{name}")
                assert member is not None
                (dest / name).write_bytes(member.read())
        wheel = next(Path(tmp).glob("insightface-2.1-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for name in FROM_WHEEL:
                (dest / name).write_bytes(archive.read(f"insightface/data/images/{name}"))
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(f"sample photos in {fetch(Path(sys.argv[1]))}")

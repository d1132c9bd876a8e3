"""Labelled face datasets: ``<identity>/<image>`` folders with optional pairs and groups files."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".gif", ".bmp", ".tif", ".tiff", ""}


@dataclass(frozen=True)
class LabelledImage:
    """One image and the identity it shows."""

    identity: str
    path: Path

    @property
    def key(self) -> str:
        """``identity/file``, unique within the dataset."""
        return f"{self.identity}/{self.path.name}"


@dataclass(frozen=True)
class Pair:
    """A labelled pair of images; ``fold`` is set for LFW-style protocols."""

    left: str
    right: str
    mated: bool
    fold: int | None = None


@dataclass
class Dataset:
    """A dataset's images, optional pair list and optional group labels."""

    root: Path
    images: list[LabelledImage]
    pairs: list[Pair] | None = None
    #: identity (or image key) → group label
    groups: dict[str, str] = field(default_factory=dict)

    def group_of(self, image: LabelledImage) -> str | None:
        """The group of an image: its own label, else its identity's."""
        return self.groups.get(image.key) or self.groups.get(image.identity)

    def fingerprint(self) -> str:
        """SHA-256 over every image's key and bytes, and the pairs and groups files' contents."""
        digest = hashlib.sha256()
        for image in self.images:
            digest.update(image.key.encode())
            digest.update(hashlib.sha256(image.path.read_bytes()).digest())
        for extra in ("pairs.csv", "groups.csv"):
            path = self.root / extra
            if path.exists():
                digest.update(path.read_bytes())
        return digest.hexdigest()


def load_dataset(root: Path, pairs_file: Path | None = None, groups_file: Path | None = None) -> Dataset:
    """Read a dataset folder. ``pairs.csv`` and ``groups.csv`` beside the folders are used when present.

    pairs.csv columns: ``left,right,mated[,fold]``, where left/right are ``identity/file`` keys or
    bare file names (when unique), and mated is yes/no/true/false/1/0 (``file_x,file_y,Decision``
    as in the deepface pair lists works too). groups.csv columns: ``identity,group`` or
    ``image,group``; lines starting with ``#`` are comments.
    """
    images = [
        LabelledImage(identity=folder.name, path=path)
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    ]
    if not images:
        raise ValueError(f"no images under {root} (expected <identity>/<image>)")
    dataset = Dataset(root=root, images=images)
    pairs_path = pairs_file or (root / "pairs.csv")
    if pairs_path.exists():
        dataset.pairs = _read_pairs(pairs_path, images)
    groups_path = groups_file or (root / "groups.csv")
    if groups_path.exists():
        with groups_path.open(newline="") as handle:
            for row in csv.reader(handle):
                if len(row) >= 2 and row[0] not in ("identity", "image") and not row[0].startswith("#"):
                    dataset.groups[row[0].strip()] = row[1].strip()
    return dataset


def _read_pairs(path: Path, images: list[LabelledImage]) -> list[Pair]:
    by_name: dict[str, list[str]] = {}
    for image in images:
        by_name.setdefault(image.path.name, []).append(image.key)
    keys = {image.key for image in images}

    def resolve(name: str) -> str:
        name = name.strip()
        if name in keys:
            return name
        matches = by_name.get(Path(name).name, [])
        if len(matches) != 1:
            raise ValueError(f"{path}: pair member {name!r} names {len(matches)} images")
        return matches[0]

    pairs = []
    with path.open(newline="") as handle:
        for row in csv.reader(handle):
            if len(row) < 3 or row[2].strip().lower() in ("decision", "mated", "same"):
                continue
            mated = row[2].strip().lower() in ("yes", "true", "1", "same")
            fold = int(row[3]) if len(row) > 3 and row[3].strip().isdigit() else None
            pairs.append(Pair(resolve(row[0]), resolve(row[1]), mated, fold))
    return pairs

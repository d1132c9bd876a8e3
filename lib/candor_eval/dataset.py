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
    #: The pair list and group labels read (given, or found beside the folders), for the fingerprint.
    pairs_file: Path | None = None
    groups_file: Path | None = None

    def group_of(self, image: LabelledImage) -> str | None:
        """The group of an image: its own label, else its identity's."""
        return self.groups.get(image.key) or self.groups.get(image.identity)

    def fingerprint(self) -> str:
        """SHA-256 over every image's key and bytes, and the contents of the pair list and group
        labels this dataset was read with (``--pairs`` and ``--groups`` as much as the files
        beside the folders)."""
        digest = hashlib.sha256()
        for image in self.images:
            digest.update(image.key.encode())
            digest.update(hashlib.sha256(image.path.read_bytes()).digest())
        for path in (self.pairs_file, self.groups_file):
            if path is not None:
                digest.update(path.read_bytes())
        return digest.hexdigest()


def load_dataset(root: Path, pairs_file: Path | None = None, groups_file: Path | None = None) -> Dataset:
    """Read a dataset folder. ``pairs.csv`` and ``groups.csv`` beside the folders are used when present.

    pairs.csv columns: ``left,right,mated[,fold]``, where left/right are ``identity/file`` keys or
    bare file names (when unique), and mated is yes/no/true/false/1/0 (``file_x,file_y,Decision``
    as in the deepface pair lists works too). LFW's own ``pairs.txt`` (View 2: a first line of
    folds and pairs per fold, then ``name n1 n2`` and ``name1 n1 name2 n2`` lines) is read as
    it is. A pair list that yields no pair is refused (ValueError) before anything is embedded.
    groups.csv columns: ``identity,group`` or
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
    if pairs_file is not None and not pairs_file.is_file():
        raise ValueError(f"the pair list {pairs_file} does not exist")
    if pairs_path.exists():
        dataset.pairs = _read_lfw_pairs(pairs_path, images) if _is_lfw(pairs_path) else _read_pairs(pairs_path, images)
        if not dataset.pairs:
            raise ValueError(
                f"the pair list {pairs_path} yields no pairs: expected left,right,mated rows or LFW's pairs.txt"
            )
        dataset.pairs_file = pairs_path
    groups_path = groups_file or (root / "groups.csv")
    if groups_file is not None and not groups_file.is_file():
        raise ValueError(f"the group labels {groups_file} do not exist")
    if groups_path.exists():
        dataset.groups_file = groups_path
        with groups_path.open(newline="") as handle:
            for row in csv.reader(handle):
                if len(row) >= 2 and row[0] not in ("identity", "image") and not row[0].startswith("#"):
                    dataset.groups[row[0].strip()] = row[1].strip()
    return dataset


def _is_lfw(path: Path) -> bool:
    """Whether a pair list is LFW's pairs.txt: its first line is two whole numbers."""
    with path.open() as handle:
        first = handle.readline().split()
    return len(first) == 2 and all(part.isdigit() for part in first)


def _read_lfw_pairs(path: Path, images: list[LabelledImage]) -> list[Pair]:
    """LFW View 2's pairs.txt: ``folds per_fold``, then per fold ``per_fold`` mated lines
    (``name n1 n2``) and ``per_fold`` non-mated ones (``name1 n1 name2 n2``); the image of
    ``name`` number ``n`` is ``name/name_000n.<ext>``."""
    by_stem = {f"{image.identity}/{image.path.stem}": image.key for image in images}
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    folds, per_fold = (int(part) for part in lines[0])
    rows = lines[1:]
    if len(rows) != 2 * folds * per_fold:
        raise ValueError(f"{path}: {len(rows)} pair lines, LFW's header says {folds} folds of {2 * per_fold}")

    def key(name: str, number: str) -> str:
        stem = f"{name}/{name}_{int(number):04d}"
        if stem not in by_stem:
            raise ValueError(f"{path}: {stem} is not in the dataset")
        return by_stem[stem]

    pairs = []
    for index, row in enumerate(rows):
        fold = index // (2 * per_fold)
        if len(row) == 3:
            pairs.append(Pair(key(row[0], row[1]), key(row[0], row[2]), True, fold))
        elif len(row) == 4:
            pairs.append(Pair(key(row[0], row[1]), key(row[2], row[3]), False, fold))
        else:
            raise ValueError(f"{path}: line {index + 2} is neither 'name n1 n2' nor 'name1 n1 name2 n2'")
    return pairs


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

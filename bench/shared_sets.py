"""The labelled sets of ../shared/datasets as one evaluation folder, grouped by annotated sex.

Each identity becomes ``<dataset>.<identity>`` (so the same folder name in two sets stays two
people), linked, not copied, and ``groups.csv`` is ``bench/shared_groups.csv``: perceived sex,
annotated by a developer, since none of the sets carries demographic labels. The images are never
copied into the repository.

Usage: python bench/shared_sets.py OUT [SHARED_DATASETS]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

SETS = ("att_orl", "yalefaces", "deepface_unit", "face_recognition_examples")
GROUPS = Path(__file__).with_name("shared_groups.csv")


def assemble(out: Path, shared: Path) -> Path:
    """Link every identity folder of the shared sets under ``out`` and add the groups file."""
    out.mkdir(parents=True, exist_ok=True)
    for name in SETS:
        for identity in sorted(p for p in (shared / name).iterdir() if p.is_dir()):
            link = out / f"{name}.{identity.name}"
            if not link.exists():
                link.symlink_to(identity.resolve(), target_is_directory=True)
    shutil.copyfile(GROUPS, out / "groups.csv")
    return out


def main() -> None:
    """Parse the command line and assemble the folder."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the folder to make (identities are linked into it)")
    parser.add_argument(
        "shared", type=Path, nargs="?", default=Path(__file__).resolve().parents[2] / "shared" / "datasets"
    )
    args = parser.parse_args()
    print(f"combined labelled set in {assemble(args.out, args.shared)}")


if __name__ == "__main__":
    main()

"""Write the image fuzzer's seed corpus: each sample photo shrunk, as JPEG and PNG.

Small seeds keep every execution fast while starting the fuzzer inside real JPEG and PNG
structure (markers, Huffman tables, chunks) instead of random bytes.

    .venv/bin/python fuzz/seeds.py SAMPLES_FOLDER CORPUS_FOLDER
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image

#: Longest side of a seed, in pixels.
SEED_SIDE = 96


def write_seeds(samples: Path, corpus: Path) -> int:
    """Write one JPEG and one PNG seed per sample photo into ``corpus``; return how many."""
    corpus.mkdir(parents=True, exist_ok=True)
    written = 0
    for photo in sorted(p for p in samples.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
        with Image.open(photo) as image:
            small = image.convert("RGB")
            small.thumbnail((SEED_SIDE, SEED_SIDE))
        for fmt in ("JPEG", "PNG"):
            buffer = io.BytesIO()
            small.save(buffer, format=fmt)
            (corpus / f"{photo.stem}.{fmt.lower()}").write_bytes(buffer.getvalue())
            written += 1
    return written


def main() -> None:
    """Command line: SAMPLES_FOLDER CORPUS_FOLDER."""
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(f"{write_seeds(Path(sys.argv[1]), Path(sys.argv[2]))} seeds written to {sys.argv[2]}")


if __name__ == "__main__":
    main()

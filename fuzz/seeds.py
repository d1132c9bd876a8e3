"""Write the fuzzers' seed corpora: each sample photo shrunk, as JPEG and PNG, for the image
fuzzer; a well-formed request of each kind for the request fuzzer; a well-formed message of each
kind for the bus message fuzzer.

Small seeds keep every execution fast while starting the fuzzer inside real JPEG and PNG
structure (markers, Huffman tables, chunks) and past the protobuf parser instead of random bytes.

    .venv/bin/python fuzz/seeds.py SAMPLES_FOLDER IMAGE_CORPUS REQUEST_CORPUS BUS_CORPUS
"""

from __future__ import annotations

import hashlib
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


def write_inputs(inputs: list[bytes], corpus: Path) -> int:
    """Write each input into ``corpus`` under its SHA-1, as libFuzzer names corpus files."""
    corpus.mkdir(parents=True, exist_ok=True)
    for data in inputs:
        (corpus / hashlib.sha1(data, usedforsecurity=False).hexdigest()).write_bytes(data)
    return len(inputs)


def main() -> None:
    """Command line: SAMPLES_FOLDER IMAGE_CORPUS REQUEST_CORPUS BUS_CORPUS."""
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    # Beside this file, which Python puts on the path.
    from bus_messages import seed_inputs as bus_seeds
    from grpc_requests import seed_inputs as request_seeds

    print(f"{write_seeds(Path(sys.argv[1]), Path(sys.argv[2]))} image seeds written to {sys.argv[2]}")
    print(f"{write_inputs(request_seeds(), Path(sys.argv[3]))} request seeds written to {sys.argv[3]}")
    print(f"{write_inputs(bus_seeds(), Path(sys.argv[4]))} bus message seeds written to {sys.argv[4]}")


if __name__ == "__main__":
    main()

"""Fuzz the photo decoder (JPEG and PNG, with its size limits) with atheris.

Every input must decode or fail with a CandorError (InvalidInput, TooLarge); any other exception,
a hang or a crash of the process is a finding. Seeds: the sample photos, shrunk.

    .venv/bin/python fuzz/decode_image.py -atheris_runs=N [-max_total_time=S] [corpus folder]
"""

from __future__ import annotations

import contextlib
import os
import sys

import atheris

#: Smoke runs (the tests) instrument only Candor's own modules; campaigns instrument everything.
SMOKE = os.environ.get("CANDOR_FUZZ_SMOKE") == "1"
with atheris.instrument_imports(include=["candor_detector", "candor_kit"]) if SMOKE else contextlib.nullcontext():
    from candor_faces.decoding import DecodeLimits, decode_image
    from candor_kit.errors import CandorError

#: Limits small enough that a fuzzed header claiming a large image is refused cheaply.
LIMITS = DecodeLimits(max_bytes=2 << 20, max_pixels=4_000_000, working_pixels=250_000)


def one_input(data: bytes) -> None:
    """Decode one input; only a refusal with a status code is an acceptable failure."""
    try:
        decode_image(data, LIMITS)
    except CandorError:
        pass


def main() -> None:
    """Run the fuzzer with libFuzzer's command line."""
    if not SMOKE:
        atheris.instrument_all()  # coverage from every Python function loaded, the libraries' included
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

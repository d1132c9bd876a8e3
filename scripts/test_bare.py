"""Proves the README's two commands on a bare Debian 12 machine: `make demo`, then `make test`.

`make test-bare` runs this from the repository root (.ci/run calls it). Steps, each timed:

1. a Docker engine and the debootstrap base image, as `make test-containers` gets them;
2. the bare machine's image (deploy/images/bare.Dockerfile): the base plus make and git, nothing else;
3. in a container of it, as root with the host's network (PyPI, npm's registry and the Debian
   mirror): `git clone` of this repository's HEAD, then `make demo` and `make test`, each timed; the
   log lands in ``--log`` (default .cache/test-bare.log) and its last lines are printed.

Nothing is installed in the image beforehand: make test's own set-up (scripts/system-deps.sh for
the Debian packages, make setup for Python's) has to bring everything. Stops by itself.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scripts.test_containers import (
    IMAGES_DIR,
    ROOT,
    build,
    docker_engine,
    ensure_base_image,
    require_free_space,
    step,
)

IMAGE = "candor/bare-debian:bookworm"
CONTAINER = "candor-test-bare"
#: Clone, make demo and make test on a machine that installs everything first (about 25 minutes).
RUN_TIMEOUT_S = 3600
TAIL_LINES = 15
#: Free space the run needs on the Docker engine's disk: the container installs Debian's packages,
#: the venv, models, npm's tools and Chromium, and the tests write their temporary files there.
NEED_GB = 12
#: Runs inside the container: the source is this repository, mounted read-only at /src.
SCRIPT = r"""
set -euo pipefail
git -c safe.directory='*' clone --quiet /src /root/candor
cd /root/candor
echo "bare machine: $(. /etc/os-release; echo "$PRETTY_NAME"), $(python3 --version), $(make --version | head -1)"
echo "commit $(git rev-parse --short HEAD)"
for target in demo test; do
  started=$(date +%s)
  make "$target"
  echo "make $target: passed in $(( $(date +%s) - started )) s"
done
echo "disk the run used in its container: $(du -sxh / 2>/dev/null | cut -f1)"
"""


def main(argv: list[str] | None = None) -> int:
    """Builds the bare image, runs clone + make demo + make test in it; returns make's status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, default=ROOT / ".cache" / "test-bare.log", help="where the run's log goes")
    args = parser.parse_args(argv)
    base = os.environ.get("CANDOR_BASE_IMAGE", "candor/debian:bookworm")
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    args.log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="candor-bare-") as work, docker_engine(env, Path(work) / "dockerd.log"):
        require_free_space(env, NEED_GB)
        ensure_base_image(base, env)
        build(IMAGE, IMAGES_DIR / "bare.Dockerfile", IMAGES_DIR, base, env)
        step(f"cloning into a bare container and running make demo, make test (log: {args.log})")
        command = [
            "docker", "run", "--rm", "--name", CONTAINER, "--network", "host",
            # Chromium needs more shared memory than Docker's 64 MiB default.
            "--shm-size", "1g",
            "--volume", f"{ROOT}:/src:ro",
            IMAGE, "bash", "-c", SCRIPT,
        ]  # fmt: skip
        subprocess.run(["docker", "rm", "--force", CONTAINER], env=env, capture_output=True)
        with args.log.open("w") as log:
            try:
                status = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S)
                code = status.returncode
            except subprocess.TimeoutExpired:
                log.write(f"\ntest-bare: stopped after {RUN_TIMEOUT_S} s\n")
                # The client's end does not stop the container: take it down too.
                subprocess.run(["docker", "rm", "--force", CONTAINER], env=env, capture_output=True)
                code = 124
    lines = args.log.read_text(errors="replace").splitlines()
    sys.stdout.write("\n".join(lines[-TAIL_LINES:]) + "\n")
    step(f"finished in {time.monotonic() - started:.0f} s with status {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())

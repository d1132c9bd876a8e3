"""Build the candor-client wheel: the client (lib/candor_client) and the generated API
(gen/candor), staged beside clients/python/pyproject.toml; nothing of Candor's services or kit.

Usage:
    python scripts/build_client.py --out dist/
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python"


def build(out: Path) -> Path:
    """Build the wheel into ``out``; returns its path."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    with tempfile.TemporaryDirectory(prefix="candor-client-") as tmp:
        stage = Path(tmp)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(CLIENT / name, stage / name)
        shutil.copytree(ROOT / "lib" / "candor_client", stage / "candor_client", ignore=skip)
        shutil.copytree(ROOT / "gen" / "candor", stage / "candor", ignore=skip)
        before = set(out.glob("candor_client-*.whl"))
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), "."],
            cwd=stage,
            check=True,
        )
    built = sorted(set(out.glob("candor_client-*.whl")) - before) or sorted(out.glob("candor_client-*.whl"))
    return built[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="folder for the wheel (default dist/)")
    wheel = build(parser.parse_args().out)
    print(f"built {wheel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

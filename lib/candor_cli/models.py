"""``candor models list|verify|fetch``: the ONNX model packs on this machine.

``fetch`` is the one command that downloads anything. It runs on a machine with a network, never
at a service's start and never in tests, and checks the archive against a SHA-256 given on the
command line (the vendor's published digest) before unpacking it. An archive without a Candor
manifest (insightface's own releases) gets one written for it, with the SHA-256 of each model file
as unpacked from the verified archive.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from candor_kit.errors import ConfigError
from candor_kit.model_pack import MANIFEST, find_model_packs, load_model_pack, sha256_file


@dataclass(frozen=True)
class KnownPack:
    """A pack ``fetch`` knows by name: where it comes from and which file does what."""

    url: str
    detection: str
    recognition: str
    licence: str
    metric: str = "cosine"
    version: str = "1"


#: Packs fetch knows by name. Check each licence before use: insightface's released packs are for
#: non-commercial research only.
KNOWN_PACKS = {
    "buffalo_l": KnownPack(
        url="https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
        detection="det_10g.onnx",
        recognition="w600k_r50.onnx",
        licence="insightface buffalo_l: non-commercial research purposes only",
    ),
    "buffalo_s": KnownPack(
        url="https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_s.zip",
        detection="det_500m.onnx",
        recognition="w600k_mbf.onnx",
        licence="insightface buffalo_s: non-commercial research purposes only",
    ),
}


def default_root() -> Path:
    """CANDOR_MODEL_PACKS, else ~/.local/share/candor/model-packs."""
    return Path(os.environ.get("CANDOR_MODEL_PACKS") or Path.home() / ".local" / "share" / "candor" / "model-packs")


def add_models_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``candor models list|verify|fetch``."""
    models = commands.add_parser("models", help="ONNX model packs").add_subparsers(dest="action", required=True)
    listing = models.add_parser("list", help="the packs under a folder, and dlib's built-in model")
    listing.add_argument("--root", type=Path, default=None, help="default: $CANDOR_MODEL_PACKS")
    verify = models.add_parser("verify", help="check a pack's manifest and every file's SHA-256")
    verify.add_argument("pack", type=Path)
    fetch = models.add_parser("fetch", help="download a pack (needs a network; never run by services)")
    fetch.add_argument("name", choices=sorted(KNOWN_PACKS))
    fetch.add_argument("--sha256", required=True, help="the archive's published SHA-256")
    fetch.add_argument("--root", type=Path, default=None, help="default: $CANDOR_MODEL_PACKS")


def run_models(args: argparse.Namespace) -> int:
    """Run one ``candor models`` action."""
    root = getattr(args, "root", None) or default_root()
    if args.action == "list":
        print("dlib-resnet-v1 1.0  euclidean 128-d  built in (face_recognition_models, CC0)")
        for folder in find_model_packs(root):
            try:
                pack = load_model_pack(folder)
            except ConfigError as exc:
                print(f"{folder}: INVALID: {exc}")
                continue
            print(
                f"{pack.model_id} {pack.version}  {pack.metric} {pack.embedding_dimension}-d  "
                f"{', '.join(sorted(pack.files))}  {pack.licence}  ({folder})"
            )
        return 0
    if args.action == "verify":
        try:
            pack = load_model_pack(args.pack)
            pack.verify()
        except ConfigError as exc:
            print(f"REFUSED: {exc}")
            return 1
        print(f"OK: {pack.model_id} {pack.version}, {len(pack.files)} files match their SHA-256")
        return 0
    folder = fetch_pack(args.name, args.sha256, root)
    print(f"fetched {args.name} into {folder}")
    return 0


def fetch_pack(name: str, archive_sha256: str, root: Path) -> Path:
    """Download a known pack, check the archive's SHA-256, unpack it and give it a manifest."""
    known = KNOWN_PACKS[name]
    target = root / name
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / f"{name}.zip"
        with urllib.request.urlopen(known.url, timeout=60) as response, archive.open("wb") as out:
            shutil.copyfileobj(response, out)
        actual = sha256_file(archive)
        if actual != archive_sha256.lower():
            raise ConfigError(f"{known.url} has SHA-256 {actual}, not {archive_sha256}; nothing was unpacked")
        unpacked = Path(scratch) / "unpacked"
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(unpacked)
        found = {path.name: path for path in unpacked.rglob("*.onnx")}
        target.mkdir(parents=True, exist_ok=True)
        for wanted in (known.detection, known.recognition):
            if wanted not in found:
                raise ConfigError(f"{name}: the archive lacks {wanted}")
            shutil.copy2(found[wanted], target / wanted)
    (target / "MODEL.LICENSE").write_text(known.licence + "\n")
    manifest = {
        "manifest_version": 2,
        "model_id": name,
        "version": known.version,
        "metric": known.metric,
        "license": "MODEL.LICENSE",
        "source": {"url": known.url, "archive_sha256": archive_sha256.lower()},
        "tasks": {
            "detection": {"file": known.detection, "sha256": sha256_file(target / known.detection)},
            "recognition": {
                "file": known.recognition,
                "sha256": sha256_file(target / known.recognition),
                "preprocessing": {"mean": 127.5, "std": 127.5},
                "input_size": [112, 112],
                "embedding_dimension": 512,
            },
        },
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    load_model_pack(target).verify()
    return target

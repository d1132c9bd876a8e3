"""ONNX model packs: a local folder with a manifest, checked before any model in it is loaded.

The manifest is insightface's ``manifest.json`` version 2 (``model_id``, ``license`` naming a
``MODEL.LICENSE`` file, ``tasks.detection`` and ``tasks.recognition`` with ``file``, ``sha256``,
``preprocessing`` {mean, std}, ``input_size``, ``embedding_dimension``), which insightface itself
parses, with what Candor needs on top: a ``version``, the ``metric`` its vectors are compared
with, and a SHA-256 for every file. A file whose hash does not match is refused. Packs are never
downloaded at run time: ``candor models fetch`` does that, separately, where a network exists.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from candor_kit.cores import usable_cores
from candor_kit.errors import ConfigError

MANIFEST = "manifest.json"
METRICS = ("cosine", "euclidean")
#: The detection ``preprocessing_version`` of a pack whose detector is OpenCV's YuNet, which Candor
#: runs through cv2.FaceDetectorYN (insightface's model_zoo knows only SCRFD).
YUNET_DETECTION = "opencv-yunet-1"
#: Licence terms a pack may declare (``licence_terms`` in its manifest) that the deployment must
#: accept by naming the pack's model id in CANDOR_ACCEPT_MODEL_LICENCES before it is loaded.
RESTRICTED_TERMS = {"non-commercial": "non-commercial research use only"}
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
log = structlog.get_logger("candor.model_pack")


#: The intra-op threads of this process's sessions: None for a thread a usable core (a service);
#: 1 in a worker process that is one of several, one a core (`sessions_on_one_thread`).
_session_threads: int | None = None


def sessions_on_one_thread() -> None:
    """Run this process's onnxruntime sessions made from now on on the calling thread alone: for a
    worker that is one of several processes, one a core (``candor eval --workers``), where a pool of
    a thread a core in each would put workers x cores threads on the cores."""
    global _session_threads
    _session_threads = 1


def session_options() -> Any:
    """onnxruntime session options for a service that shares its cores.

    The intra-op pool has a thread for each core this process may use (its affinity, capped by its
    cgroup's CPU quota), the calling thread included. Left to itself onnxruntime
    sizes the pool to the host's physical cores, whatever the quota (a pod limited to one core on
    a 16-core node would run 16 threads and be throttled), and pins them to cores, which fails
    under a cpuset. The pool does not spin between runs (by default it busy-waits after each call,
    burning the CPU the detector and the other stages of an import need).

    Each session keeps a pool of its own: onnxruntime's pool shared by a process's sessions (its
    global thread pool) cannot be told not to spin from Python, and spinning it took a whole core
    between calls (1.1 s of CPU in 1.07 s of a loop of small runs 5 ms apart, against 0.09 s).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # Errors only: SFace's export lists its weights as graph inputs, and onnxruntime would warn
    # about each of its 300 initializers on every start.
    options.log_severity_level = 3
    options.intra_op_num_threads = _session_threads or usable_cores()
    options.inter_op_num_threads = 1  # operators run one after another (the default mode)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def choose_providers(requested: str, available: Sequence[str] | None = None) -> list[str]:
    """onnxruntime providers for ``cpu`` or ``cuda``; CUDA falls back to CPU, with a warning, when
    ``available`` (default: this machine's onnxruntime) has no CUDA."""
    if available is None:
        import onnxruntime

        available = onnxruntime.get_available_providers()
    if requested == "cpu":
        return [CPU]
    if requested == "cuda":
        if CUDA in available:
            return [CUDA, CPU]
        log.warning("onnx_cuda_unavailable", available=list(available), running=CPU)
        return [CPU]
    raise ConfigError(f"unknown ONNX providers {requested!r}; use cpu or cuda")


@dataclass(frozen=True)
class PackFile:
    """One model file of a pack and the SHA-256 the manifest gives it."""

    task: str
    path: Path
    sha256: str


@dataclass(frozen=True)
class ModelPack:
    """A validated pack; its files are checked by ``verify`` before a session is made."""

    path: Path
    model_id: str
    version: str
    metric: str
    licence: str
    embedding_dimension: int
    #: Input normalisation of the recogniser: (pixel - mean) / std.
    mean: float
    std: float
    input_size: int
    files: Mapping[str, PackFile]
    #: The detector's kind: insightface's SCRFD unless the manifest names YuNet.
    detection_family: str = "insightface-scrfd-1"
    #: A key of RESTRICTED_TERMS, or "" for a licence that asks nothing of the deployment.
    licence_terms: str = ""
    #: The threshold the pack's maker gives (``nominal_threshold`` in the manifest), in its metric.
    nominal_threshold: float | None = None

    def check_licence(self, accepted: Iterable[str]) -> None:
        """Refuse (ConfigError) a pack with restricted terms the deployment has not accepted."""
        if self.licence_terms and self.model_id not in set(accepted):
            raise ConfigError(
                f"model pack {self.model_id} is licensed for {RESTRICTED_TERMS[self.licence_terms]} "
                f"({self.licence}); to accept those terms for this deployment, add {self.model_id} to "
                "CANDOR_ACCEPT_MODEL_LICENCES"
            )
        if self.licence_terms:
            log.warning("model_licence_accepted", model=self.model_id, terms=self.licence_terms, licence=self.licence)

    def verify(self) -> None:
        """Refuse the pack (ConfigError) when a file is missing or its SHA-256 does not match."""
        for item in self.files.values():
            if not item.path.is_file():
                raise ConfigError(f"model pack {self.model_id}: {item.task} file {item.path.name} is missing")
            actual = sha256_file(item.path)
            if actual != item.sha256:
                raise ConfigError(
                    f"model pack {self.model_id}: {item.path.name} has SHA-256 {actual}, "
                    f"the manifest says {item.sha256}; refusing to load it"
                )

    def summary(self) -> dict[str, Any]:
        """What ``candor models list`` shows and the audit records of a loaded model carry."""
        return {
            "model_id": self.model_id,
            "version": self.version,
            "metric": self.metric,
            "dimension": self.embedding_dimension,
            "licence": self.licence,
            "licence_terms": self.licence_terms or "none",
            "tasks": sorted(self.files),
            "path": str(self.path),
        }


def checked_task_file(pack: ModelPack, task: str, accepted_licences: Iterable[str] = ()) -> Path:
    """The file of one task of the pack, once its licence terms are accepted and every file of the
    pack matches its SHA-256 (ConfigError otherwise)."""
    if task not in pack.files:
        raise ConfigError(f"model pack {pack.model_id} has no {task} model")
    pack.check_licence(accepted_licences)
    pack.verify()
    return pack.files[task].path


def load_task_model(
    pack: ModelPack, task: str, providers: str, accepted_licences: Iterable[str] = ()
) -> tuple[Any, list[str]]:
    """Check the pack's licence terms were accepted, verify its files, then load one task's model
    through insightface's model_zoo on the chosen providers; returns the model and the providers
    its session really runs on (also logged)."""
    from insightface.model_zoo import get_model

    checked_task_file(pack, task, accepted_licences)
    model = get_model(
        str(pack.path), model_task=task, providers=choose_providers(providers), sess_options=session_options()
    )
    running = list(model.session.get_providers())
    log.info("onnx_model_loaded", model=pack.model_id, version=pack.version, task=task, providers=running)
    return model, running


def recognition_session(
    pack: ModelPack, providers: str, accepted_licences: Iterable[str] = ()
) -> tuple[Any, list[str]]:
    """An onnxruntime session of the pack's recogniser, once its licence terms are accepted and its
    files verified; with the providers it really runs on (also logged).

    Some exports (SFace's) list every weight as a graph input too. onnxruntime must then treat
    each weight as something a caller may replace, and folds and fuses none of them: taking the
    weights out of the inputs (the file on disk is unchanged) makes SFace about a fifth faster on
    a CPU, with the same vectors. An export fixed to batches of one (SFace's, again) gets a free
    batch size where no Reshape could depend on it; otherwise its session stays at one a call.
    """
    import onnx
    import onnxruntime

    path = checked_task_file(pack, "recognition", accepted_licences)
    model = onnx.load(str(path))
    weights = {initializer.name for initializer in model.graph.initializer}
    inputs = [item for item in model.graph.input if item.name not in weights]
    if len(inputs) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(inputs)
    batch = [value.type.tensor_type.shape.dim[0] for value in (*model.graph.input[:1], *model.graph.output[:1])]
    if all(dim.dim_value == 1 for dim in batch) and not any(node.op_type == "Reshape" for node in model.graph.node):
        for dim in batch:
            dim.dim_param = "batch"  # replaces the fixed size (the two are one field's alternatives)
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), sess_options=session_options(), providers=choose_providers(providers)
    )
    running = list(session.get_providers())
    log.info("onnx_model_loaded", model=pack.model_id, version=pack.version, task="recognition", providers=running)
    return session, running


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model_pack(folder: Path) -> ModelPack:
    """Parse a pack's manifest with insightface's own parser, then Candor's additions."""
    from insightface.model_zoo.package_manifest import load_model_package

    try:
        package = load_model_package(folder)
        raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"model pack {folder}: {exc}") from exc
    problems = []
    version, metric = raw.get("version"), raw.get("metric")
    terms = raw.get("licence_terms", "")
    nominal = raw.get("nominal_threshold")
    if nominal is not None and (isinstance(nominal, bool) or not isinstance(nominal, int | float) or nominal <= 0):
        problems.append("nominal_threshold must be a positive number when given")
    if terms and terms not in RESTRICTED_TERMS:
        problems.append(f"licence_terms must be one of {', '.join(RESTRICTED_TERMS)} when given")
    if not isinstance(version, str) or not version.strip():
        problems.append("version is required (a string)")
    if metric not in METRICS:
        problems.append(f"metric must be one of {', '.join(METRICS)}")
    if "recognition" not in package.tasks:
        problems.append("tasks.recognition is required")
    missing_hash = [task for task, descriptor in package.tasks.items() if descriptor.sha256 is None]
    if missing_hash:
        problems.append(f"every file needs its sha256 (missing for {', '.join(missing_hash)})")
    if problems:
        raise ConfigError(f"model pack {folder}: {'; '.join(problems)}")
    recognition = package.tasks["recognition"].metadata
    preprocessing = recognition["preprocessing"]
    if preprocessing == "embedded":
        mean, std = 0.0, 1.0
    else:
        mean, std = float(preprocessing["mean"]), float(preprocessing["std"])
    detection = package.tasks.get("detection")
    family = str(detection.metadata["preprocessing_version"]) if detection else "insightface-scrfd-1"
    licence_file = package.license_path
    licence = licence_file.read_text(encoding="utf-8").strip().splitlines()[0] if licence_file else ""
    return ModelPack(
        path=package.path,
        model_id=package.model_id,
        version=str(version),
        metric=str(metric),
        licence=licence,
        embedding_dimension=int(recognition["embedding_dimension"]),
        mean=mean,
        std=std,
        input_size=int(recognition["input_size"][0]),
        files={
            task: PackFile(task, descriptor.path, str(descriptor.sha256)) for task, descriptor in package.tasks.items()
        },
        detection_family=family,
        licence_terms=str(terms),
        nominal_threshold=None if nominal is None else float(nominal),
    )


def find_model_packs(root: Path) -> Iterator[Path]:
    """The folders under ``root`` (and ``root`` itself) that hold a pack manifest."""
    if (root / MANIFEST).is_file():
        yield root
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if (child / MANIFEST).is_file():
                yield child

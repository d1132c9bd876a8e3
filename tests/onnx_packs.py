"""Model packs with SYNTHETIC weights, built by the tests: they have the shapes of real packs (a
9-output SCRFD detector, a 512-d ArcFace-style recogniser on 112x112 chips) and random weights,
so they exercise loading, hashing, providers and batching, never accuracy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="candor-tests-synthetic")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def synthetic_recogniser(path: Path, dimension: int = 512, seed: int = 7) -> None:
    """Chips [N,3,112,112] → 14x14 average pool → flatten (192) → a random projection to ``dimension``."""
    weights = np.random.default_rng(seed).standard_normal((3 * 8 * 8, dimension)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node(
                "AveragePool", ["input.1"], ["pooled"], name="pool", kernel_shape=[14, 14], strides=[14, 14]
            ),
            helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
            helper.make_node("MatMul", ["flat", "projection"], ["embedding"], name="project"),
        ],
        "synthetic-recogniser",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dimension])],
        [numpy_helper.from_array(weights, "projection")],
    )
    _save(graph, path)


def synthetic_scrfd(path: Path) -> None:
    """SCRFD's output layout for strides 8, 16, 32 with two anchors and keypoints: scores, boxes,
    keypoints per stride (9 outputs), each computed from the input so the shapes follow it; the
    scores are all zero, so it finds no face."""
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["gray"], name="gray", axes=[1], keepdims=1)]
    outputs = []
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            name = f"{kind}_{stride}"
            nodes += [
                helper.make_node(
                    "AveragePool", ["gray"], [f"{name}_pool"], kernel_shape=[stride, stride], strides=[stride, stride]
                ),
                helper.make_node("Mul", [f"{name}_pool", "zero"], [f"{name}_zero"]),
                # Two anchors per cell, `width` values per anchor: [cells * 2, width].
                helper.make_node("Reshape", [f"{name}_zero", "column"], [f"{name}_col"]),
                helper.make_node("Tile", [f"{name}_col", f"tile_{width}"], [f"{name}_tiled"]),
                helper.make_node("Reshape", [f"{name}_tiled", f"rows_{width}"], [name]),
            ]
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["M", width]))
    constants = [
        numpy_helper.from_array(np.zeros((), np.float32), "zero"),
        numpy_helper.from_array(np.array([-1, 1], np.int64), "column"),
    ]
    for width in (1, 4, 10):
        constants.append(numpy_helper.from_array(np.array([1, 2 * width], np.int64), f"tile_{width}"))
        constants.append(numpy_helper.from_array(np.array([-1, width], np.int64), f"rows_{width}"))
    graph = helper.make_graph(
        nodes,
        "synthetic-scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "H", "W"])],
        outputs,
        constants,
    )
    _save(graph, path)


#: Where the one-face detector "finds" its face in the 640x640 input: the stride-32 cell at
#: column 10, row 8 (centre 320, 256), a 192 px box, and five keypoints around the centre.
ONE_FACE_CELL = (8, 10)
ONE_FACE_KEYPOINTS = [-1.0, -0.8, 1.0, -0.8, 0.0, 0.0, -0.8, 1.0, 0.8, 1.0]


def synthetic_scrfd_one_face(path: Path) -> None:
    """SCRFD's output layout on a fixed 640x640 input, constant but for a zero term taken from the
    input: one face, always at the same place, whatever the photo."""
    nodes = [
        helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
    ]
    outputs, constants = [], [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    row, column = ONE_FACE_CELL
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            cells = (640 // stride) ** 2
            values = np.zeros((cells * 2, width), np.float32)
            if stride == 32:
                anchor = (row * (640 // stride) + column) * 2
                values[anchor] = {"score": [0.9], "bbox": [3.0] * 4, "kps": ONE_FACE_KEYPOINTS}[kind]
            name = f"{kind}_{stride}"
            constants.append(numpy_helper.from_array(values, f"{name}_value"))
            nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [cells * 2, width]))
    graph = helper.make_graph(
        nodes,
        "synthetic-scrfd-one-face",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])],
        outputs,
        constants,
    )
    _save(graph, path)


def write_pack(folder: Path, model_id: str = "synthetic-arcface", one_face: bool = False, **overrides: object) -> Path:
    """A pack folder: both models, a licence and a manifest with their SHA-256s. ``one_face``
    makes the detector find one face in every photo instead of none."""
    folder.mkdir(parents=True, exist_ok=True)
    (synthetic_scrfd_one_face if one_face else synthetic_scrfd)(folder / "det.onnx")
    synthetic_recogniser(folder / "rec.onnx")
    (folder / "MODEL.LICENSE").write_text("Synthetic test weights, no licence needed.\n")

    def sha(name: str) -> str:
        return hashlib.sha256((folder / name).read_bytes()).hexdigest()

    manifest: dict[str, object] = {
        "manifest_version": 2,
        "model_id": model_id,
        "version": "0.0-synthetic",
        "metric": "cosine",
        "license": "MODEL.LICENSE",
        "tasks": {
            "detection": {"file": "det.onnx", "sha256": sha("det.onnx")},
            "recognition": {
                "file": "rec.onnx",
                "sha256": sha("rec.onnx"),
                "preprocessing": {"mean": 127.5, "std": 127.5},
                "input_size": [112, 112],
                "embedding_dimension": 512,
            },
        },
        **overrides,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder

"""Faces per second of the ONNX recognition engine on a GPU (CUDA) and on the CPU, same code, same
chips, at batch sizes 1, 32 and 256, in one run; prints each figure and the GPU/CPU ratio.

The recogniser is a model pack's (``--pack DIR``, e.g. one fetched with ``candor models fetch``)
or, by default, an IResNet-50-shaped network built here with random weights: the architecture
of insightface's w600k_r50 (3x3 convolutions in 4 stages of 3, 4, 14 and 3 residual blocks at
64 to 512 channels on 112x112 chips, then a 25088 x 512 projection), so its arithmetic is that of
the real model although its vectors mean nothing. It runs through the same OnnxRecognitionEngine
the embedder service runs.

    python bench/embedder_gpu.py                       # synthetic IResNet-50, CUDA and CPU
    python bench/embedder_gpu.py --pack PACK_DIR       # a real pack
    python bench/embedder_gpu.py --providers cpu --batches 1,8 --seconds 2   # a quick CPU check

On a machine with a GPU the embedder image needs onnxruntime-gpu in place of onnxruntime; the
script installs nothing and says when CUDA is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from candor_faces.onnx_engine import OnnxRecognitionEngine  # noqa: E402
from candor_kit.model_pack import load_model_pack, sha256_file  # noqa: E402

STAGES = ((64, 3), (128, 4), (256, 14), (512, 3))


class GraphBuilder:
    """Convolutions with random (He) weights, appended to one graph."""

    def __init__(self, seed: int = 0) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self._rng = np.random.default_rng(seed)
        self._count = 0

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}{self._count}"

    def conv(self, x: str, cin: int, cout: int, kernel: int, stride: int, relu: bool) -> str:
        name = self._name("conv")
        scale = np.sqrt(2.0 / (cin * kernel * kernel))
        weight = (self._rng.standard_normal((cout, cin, kernel, kernel)) * scale).astype(np.float32)
        self.weights.append(numpy_helper.from_array(weight, f"{name}.w"))
        self.weights.append(numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}.b"))
        pad = kernel // 2
        self.nodes.append(
            helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name], strides=[stride, stride], pads=[pad] * 4)
        )
        return self.relu(name) if relu else name

    def relu(self, x: str) -> str:
        name = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [name]))
        return name

    def add(self, a: str, b: str) -> str:
        name = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [name]))
        return name


def iresnet50(path: Path, dimension: int = 512) -> None:
    """An IResNet-50-shaped recogniser with random weights (batch-norm folded into convolutions)."""
    g = GraphBuilder()
    x = g.conv("input.1", 3, 64, 3, 1, relu=True)
    channels = 64
    for width, blocks in STAGES:
        for block in range(blocks):
            stride = 2 if block == 0 else 1
            y = g.conv(x, channels, width, 3, 1, relu=True)
            y = g.conv(y, width, width, 3, stride, relu=False)
            shortcut = g.conv(x, channels, width, 1, stride, relu=False) if block == 0 else x
            x = g.relu(g.add(y, shortcut))
            channels = width
    projection = (np.random.default_rng(1).standard_normal((512 * 7 * 7, dimension)) * 0.01).astype(np.float32)
    g.weights.append(numpy_helper.from_array(projection, "fc.w"))
    g.nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
    g.nodes.append(helper.make_node("MatMul", ["flat", "fc.w"], ["embedding"]))
    graph = helper.make_graph(
        g.nodes,
        "iresnet50-shaped-random",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dimension])],
        g.weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def synthetic_pack(folder: Path) -> Path:
    """A pack holding only the IResNet-50-shaped recogniser."""
    iresnet50(folder / "rec.onnx")
    (folder / "MODEL.LICENSE").write_text("Random weights built by bench/embedder_gpu.py.\n")
    digest = sha256_file(folder / "rec.onnx")
    manifest = {
        "manifest_version": 2,
        "model_id": "iresnet50-shaped-random",
        "version": "bench",
        "metric": "cosine",
        "license": "MODEL.LICENSE",
        "tasks": {"recognition": {"file": "rec.onnx", "sha256": digest, "embedding_dimension": 512}},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def faces_per_second(engine: OnnxRecognitionEngine, batch: int, seconds: float) -> float:
    """Embed batches of ``batch`` chips for about ``seconds`` (after one warm-up call)."""
    chips = list(np.random.default_rng(batch).integers(0, 256, (batch, 112, 112, 3), dtype=np.uint8))
    engine.embed(chips)
    done, start = 0, time.perf_counter()
    while True:
        engine.embed(chips)
        done += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, help="a model pack folder (default: synthetic IResNet-50)")
    parser.add_argument("--providers", default="cuda,cpu", help="comma-separated: cuda, cpu")
    parser.add_argument("--batches", default="1,32,256")
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per figure")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="candor-gpu-bench-") as scratch:
        pack = load_model_pack(args.pack or synthetic_pack(Path(scratch)))
        results: dict[str, dict[int, float]] = {}
        for provider in args.providers.split(","):
            engine = OnnxRecognitionEngine(pack, provider)
            if provider == "cuda" and "CUDAExecutionProvider" not in engine.providers:
                print("cuda: onnxruntime has no CUDA provider here (install onnxruntime-gpu); skipped")
                continue
            results[provider] = {batch: faces_per_second(engine, batch, args.seconds) for batch in batches}
    print(f"model {pack.model_id} {pack.version}; faces per second")
    print("batch " + "".join(f"{name:>12}" for name in results) + ("   cuda/cpu" if len(results) == 2 else ""))
    for batch in batches:
        row = "".join(f"{results[name][batch]:12.1f}" for name in results)
        ratio = f"{results['cuda'][batch] / results['cpu'][batch]:11.1f}" if {"cuda", "cpu"} <= set(results) else ""
        print(f"{batch:5d} {row}{ratio}")
    if "cuda" in results:
        best = max(results["cuda"].values())
        print(f"best GPU throughput {best:.0f} faces/s (goal: >= 2000 on one H100)")


if __name__ == "__main__":
    main()

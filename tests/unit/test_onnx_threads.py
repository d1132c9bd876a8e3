"""onnxruntime's thread pool is sized to the cores this process may use, checked on real sessions
in fresh interpreters whose CPU affinity is set as a container's cpuset would set it.

Why: left to itself onnxruntime sizes its intra-op pool to the host's physical cores, whatever the
process's affinity or its cgroup's CPU quota (a pod limited to one core on a 16-core node would run
16 threads and be throttled), and pins each thread to a core, which fails under a cpuset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# A session over a small real graph (a 256 x 256 MatMul, large enough for onnxruntime to split),
# run a few times; the threads the process gained are onnxruntime's pool.
PROBE = """
import json, os, sys
cores = json.loads(sys.argv[1])
os.sched_setaffinity(0, cores)
import numpy, onnx, onnxruntime
from onnx import TensorProto, helper
before = set(os.listdir("/proc/self/task"))
graph = helper.make_graph(
    [helper.make_node("MatMul", ["a", "b"], ["c"])], "probe",
    [helper.make_tensor_value_info("a", TensorProto.FLOAT, [256, 256]),
     helper.make_tensor_value_info("b", TensorProto.FLOAT, [256, 256])],
    [helper.make_tensor_value_info("c", TensorProto.FLOAT, [256, 256])])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 9
from candor_kit.model_pack import session_options
session = onnxruntime.InferenceSession(model.SerializeToString(), sess_options=session_options(),
                                       providers=["CPUExecutionProvider"])
a = numpy.ones((256, 256), dtype=numpy.float32)
for _ in range(5):
    session.run(None, {"a": a, "b": a})
print(json.dumps({"gained": len(set(os.listdir("/proc/self/task")) - before)}))
"""


def pool_threads(cores: set[int]) -> int:
    """The threads a fresh interpreter allowed ``cores`` gains by making and running a session."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(sorted(cores))], capture_output=True, text=True, check=True, env=env
    )
    return int(json.loads(out.stdout.strip().splitlines()[-1])["gained"])


def test_a_process_allowed_one_core_runs_onnxruntime_without_pool_threads() -> None:
    first = min(os.sched_getaffinity(0))
    assert pool_threads({first}) == 0  # the caller's thread does the work: no worker to contend with


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable cores to see a pool of two")
def test_a_process_allowed_two_cores_runs_one_pool_thread_beside_the_caller() -> None:
    two = set(sorted(os.sched_getaffinity(0))[:2])
    assert pool_threads(two) == 1  # intra-op threads include the caller: two cores, one worker


# An evaluation worker (`candor eval --workers N`), started as the pool starts it, embeds a photo.
WORKER = """
import json, os, sys
from pathlib import Path
os.sched_setaffinity(0, json.loads(sys.argv[1]))
from candor_eval.dataset import LabelledImage
from candor_eval.embedding import PipelineSpec, _embed_in_worker, _start_worker
before = set(os.listdir("/proc/self/task"))
_start_worker(PipelineSpec())
_embed_in_worker(LabelledImage(identity="obama", path=Path(sys.argv[2])))
print(json.dumps({"gained": len(set(os.listdir("/proc/self/task")) - before)}))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable cores to see a pool")
def test_an_evaluation_worker_runs_its_models_on_its_own_thread(samples: Path) -> None:
    # The workers are one a core: a model's pool of a thread a core in each would only contend.
    two = sorted(os.sched_getaffinity(0))[:2]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", WORKER, json.dumps(two), str(samples / "obama.jpg")],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    assert json.loads(out.stdout.strip().splitlines()[-1])["gained"] == 0

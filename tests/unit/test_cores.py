"""The limit every service puts on numpy's BLAS threads, checked in a fresh interpreter (the limit
holds for the whole process): numpy's OpenBLAS runs on one thread, FAISS's OpenMP pool keeps its
size (its fast-scan uses it at millions of faces)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, faiss, numpy
from threadpoolctl import threadpool_info
before = faiss.omp_get_max_threads()
from candor_kit.cores import one_blas_thread
one_blas_thread()
print(json.dumps({"before": before, "faiss": faiss.omp_get_max_threads(),
                  "pools": [[i["threading_layer"] if "threading_layer" in i else i["user_api"], i["num_threads"]]
                            for i in threadpool_info()]}))
"""


def test_numpy_blas_runs_on_one_thread_and_faiss_keeps_its_openmp_pool() -> None:
    env_free = {"PATH": "/usr/bin:/bin"}  # no OMP_NUM_THREADS or OPENBLAS_NUM_THREADS from outside
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env_free)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    pthread_blas = [threads for layer, threads in found["pools"] if layer == "pthreads"]
    assert pthread_blas and all(threads == 1 for threads in pthread_blas)  # numpy's OpenBLAS
    assert found["faiss"] == found["before"]  # the OpenMP pool is left as it was

"""Gallery search at scale: Candor's gallery beside its anchors and Qdrant's own codes, one run.

    .venv/bin/python bench/gallery_scale.py --sizes 250000,1000000,2500000

The gallery is synthetic but shaped like faces: identity centres and the spread of each
identity's photos are fitted to real SFace embeddings (the default model) of a labelled set
(``--calibrate``, ../shared/datasets/att_orl by default), with 1 to 4 photos per identity as in a
booking gallery, and made unit length as SFace's are. Each probe is a new photo of a gallery
identity, so every probe has true mates.

Every engine runs in its own process on the same vectors (a memory-mapped .npy), so each RSS is
its own: build time, RSS while serving, p50 and p99 of single queries, and recall@50 against exact
search, plus how many probes lost a true mate that exact search ranks in its top 50. Engines:
``exact`` (numpy float32, the ground truth), ``edge`` (Qdrant Edge as the matcher configures the
shard: int8 codes scanned in full, rescored x4), ``edge-pq`` and ``edge-binary`` (Qdrant's product
and binary quantization, scanned in full and rescored with the ``--oversampling`` given),
``faiss-fastscan`` (FAISS's 4-bit PQ fast-scan with a numpy rescoring of ``--candidates``: the
anchor) and ``candor`` (the matcher after a restart: the shard written by another process, loaded,
and `EdgeCollection.build_index` building the fast-scan index from it; searches go through
`EdgeCollection.nearest`, subjects read from the shard included). For ``candor`` the p99 is then
measured again while a thread enrols new faces one by one, each checked to be found at once.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

K = 50
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from proc_cpu import thread_cpu  # noqa: E402 - what else in an engine's process competes with its searches


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory now, in MiB: all of it (VmRSS), or the part that is its own
    (RssAnon) or memory-mapped files' pages the kernel may reclaim (RssFile)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- calibration from real embeddings ------------------------------------------------------------


def calibrate(dataset: Path) -> dict[str, Any]:
    """Fit identity centres (mean, shrunk covariance) and the within-identity spread to real vectors."""
    from candor_eval.dataset import load_dataset
    from candor_eval.embedding import PipelineSpec, embed_all

    data = load_dataset(dataset)
    pipeline = PipelineSpec().build()  # the default model (SFace), as the services run it
    embedded = [e for e in embed_all(pipeline, data.images) if e.vector is not None]
    by_subject: dict[str, list[np.ndarray]] = {}
    for item in embedded:
        by_subject.setdefault(item.image.identity, []).append(np.asarray(item.vector, dtype=np.float64))
    groups = [np.stack(v) for v in by_subject.values() if len(v) >= 2]
    centres = np.stack([g.mean(axis=0) for g in groups])
    residuals = np.concatenate([g - g.mean(axis=0) for g in groups])
    # Unbiased per-dimension within-identity spread.
    dof = sum(len(g) - 1 for g in groups)
    within = np.sqrt((residuals**2).sum(axis=0) / dof)
    cov = np.cov(centres, rowvar=False)
    shrunk = 0.5 * cov + 0.5 * np.diag(np.diag(cov))  # 40-odd centres: shrink towards the diagonal
    mate = [np.linalg.norm(g[i] - g[j]) for g in groups for i in range(len(g)) for j in range(i + 1, len(g))]
    nonmate = [np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1 :]]
    return {
        "dataset": str(dataset),
        "subjects": len(groups),
        "vectors": int(sum(len(g) for g in groups)),
        "mean": centres.mean(axis=0).tolist(),
        "between_chol": np.linalg.cholesky(shrunk + 1e-9 * np.eye(len(shrunk))).tolist(),
        "within": within.tolist(),
        "real_mate_distance": float(np.median(mate)),
        "real_centre_distance": float(np.median(nonmate)),
    }


def synthesise(
    fit: dict[str, Any], size: int, queries: int, seed: int = 7
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gallery vectors with their identities, and probes (new photos of gallery identities)."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(fit["mean"], dtype=np.float32)
    chol = np.asarray(fit["between_chol"], dtype=np.float32)
    within = np.asarray(fit["within"], dtype=np.float32)
    photos = rng.integers(1, 5, size=size)  # 1 to 4 photos per identity
    photos = photos[: int(np.searchsorted(np.cumsum(photos), size)) + 1]
    labels = np.repeat(np.arange(len(photos)), photos)[:size]
    centres = mean + rng.standard_normal((len(photos), len(mean)), dtype=np.float32) @ chol.T
    gallery = np.empty((size, len(mean)), dtype=np.float32)
    step = 200_000
    for start in range(0, size, step):
        part = labels[start : start + step]
        noise = rng.standard_normal((len(part), len(mean)), dtype=np.float32) * within
        gallery[start : start + step] = centres[part] + noise
    probe_labels = labels[rng.integers(0, size, size=queries)]
    probes = centres[probe_labels] + rng.standard_normal((queries, len(mean)), dtype=np.float32) * within
    # SFace's vectors are unit length and compared by cosine: so are these.
    for start in range(0, size, step):
        gallery[start : start + step] /= np.linalg.norm(gallery[start : start + step], axis=1, keepdims=True)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    return gallery, labels, probes.astype(np.float32), probe_labels


# --- engines, each in its own process ------------------------------------------------------------


def _exact(gallery: np.ndarray, probes: np.ndarray, _: dict[str, Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    matrix = np.ascontiguousarray(gallery)
    build = time.perf_counter() - start

    def search(q: np.ndarray, _: float | None) -> list[int]:
        s = matrix @ q
        top = np.argpartition(-s, K)[:K]
        return top[np.argsort(-s[top])].tolist()

    return build, search


def _edge_config(dimension: int, quantization: str) -> Any:
    """The matcher's shard settings, or the same with Qdrant's product or binary quantization."""
    from qdrant_edge import (
        BinaryQuantizationConfig,
        BinaryQuantizationEncoding,
        BinaryQuantizationQueryEncoding,
        CompressionRatio,
        Distance,
        EdgeConfig,
        EdgeVectorParams,
        HnswIndexConfig,
        ProductQuantizationConfig,
    )

    from candor_matcher.edge_backend import shard_config

    if quantization == "int8":
        return shard_config(dimension, "cosine")
    codes = {
        "pq": ProductQuantizationConfig(CompressionRatio.X16, always_ram=True),  # 32 bytes a face
        "binary": BinaryQuantizationConfig(
            always_ram=True,
            encoding=BinaryQuantizationEncoding.TwoBits,
            query_encoding=BinaryQuantizationQueryEncoding.Scalar8Bits,
        ),
    }[quantization]
    return EdgeConfig(
        vectors=EdgeVectorParams(size=dimension, distance=Distance.Cosine),
        hnsw_config=HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
        quantization_config=codes,
    )


def write_shard(vectors: str, folder: str, quantization: str = "int8") -> float:
    """Write the gallery into a Qdrant Edge shard, 20,000 points an update, and optimise it."""
    from qdrant_edge import EdgeShard, Point, UpdateOperation

    gallery = np.load(vectors, mmap_mode="r")
    start = time.perf_counter()
    shard = EdgeShard.create(folder, _edge_config(gallery.shape[1], quantization))
    step = 20_000
    for first in range(0, len(gallery), step):
        block = np.asarray(gallery[first : first + step])
        points = [
            Point(str(uuid.UUID(int=first + i + 1)), v.tolist(), {"subject_id": str(first + i)})
            for i, v in enumerate(block)
        ]
        shard.update(UpdateOperation.upsert_points(points))
    shard.flush()
    shard.optimize()
    shard.close()
    return time.perf_counter() - start


def _edge(gallery: np.ndarray, probes: np.ndarray, options: dict[str, Any]) -> tuple[float, Any]:
    from qdrant_edge import EdgeShard, QuantizationSearchParams, Query, QueryRequest, SearchParams

    folder = tempfile.mkdtemp(prefix="shard-", dir=options["workdir"])  # removed with the size's folder
    build = write_shard(options["vectors"], f"{folder}/shard", options["quantization"])
    shard = EdgeShard.load(f"{folder}/shard")  # served as a restarted matcher serves it: from disk

    def search(q: np.ndarray, oversampling: float | None) -> list[int]:
        quantized = QuantizationSearchParams(rescore=True, oversampling=oversampling or 4.0)
        found = shard.query(
            QueryRequest(limit=K, query=Query.Nearest(q.tolist()), params=SearchParams(quantization=quantized))
        )
        return [uuid.UUID(str(p.id)).int - 1 for p in found]

    return build, search


def _faiss_fastscan(gallery: np.ndarray, probes: np.ndarray, options: dict[str, Any]) -> tuple[float, Any]:
    """FAISS's own 4-bit PQ fast-scan, the shortlist rescored with numpy: the anchor."""
    import faiss

    faiss.omp_set_num_threads(1)
    start = time.perf_counter()
    matrix = np.ascontiguousarray(gallery)
    index = faiss.IndexPQFastScan(matrix.shape[1], matrix.shape[1] // 2, 4, faiss.METRIC_INNER_PRODUCT)
    index.train(matrix[np.sort(np.random.default_rng(0).choice(len(matrix), min(len(matrix), 100_000), replace=False))])
    index.add(matrix)
    build = time.perf_counter() - start

    def search(q: np.ndarray, candidates: float | None) -> list[int]:
        _, found = index.search(q.reshape(1, -1), int(candidates or 4000))
        rows = np.sort(found[0][found[0] >= 0])
        s = matrix[rows] @ q
        top = np.argpartition(-s, K)[:K]
        return rows[top[np.argsort(-s[top])]].tolist()

    return build, search


def _candor(gallery: np.ndarray, probes: np.ndarray, options: dict[str, Any]) -> tuple[float, Any]:
    """The matcher's own gallery after a restart: the shard written by another process, loaded,
    and the candidate index built from it (`EdgeCollection.build_index`), as the matcher does."""
    from qdrant_edge import EdgeShard

    from candor_matcher.edge_backend import EdgeCollection
    from candor_matcher.gallery import GalleryModel

    folder = tempfile.mkdtemp(prefix="shard-", dir=options["workdir"])  # removed with the size's folder
    context = mp.get_context("spawn")
    with context.Pool(1) as pool:
        options["shard_s"] = pool.apply(write_shard, (options["vectors"], f"{folder}/shard"))
    model = GalleryModel("sface", "1", "cosine", gallery.shape[1])
    start = time.perf_counter()
    collection = EdgeCollection(EdgeShard.load(f"{folder}/shard"), model, folder=Path(folder) / "shard")
    collection.build_index()
    build = time.perf_counter() - start
    options["collection"] = collection

    def search(q: np.ndarray, _: float | None) -> list[int]:
        return [uuid.UUID(r.record_id).int - 1 for r in collection.nearest(q.tolist(), K, -1.0)]

    return build, search


#: Seconds the searches run beside the concurrent import.
IMPORT_SECONDS = 10.0


def under_import(
    collection: Any, queries: np.ndarray, search: Any, dimension: int, group: int, rate: float
) -> dict[str, Any]:
    """Search p99 while another thread enrols new faces at ``rate`` a second, ``group`` at a time in
    one write flushed to disk (as the matcher's group commit writes an import's batch); each
    enrolment is searched for at once and must be found."""
    stop = threading.Event()
    enrolled, missed = [0], [0]

    def enrol() -> None:
        rng = np.random.default_rng(99)
        started = time.perf_counter()
        while not stop.is_set():
            vectors = rng.standard_normal((group, dimension)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            records = [str(uuid.uuid4()) for _ in range(group)]
            collection.upsert([(r, v.tolist(), {"subject_id": r}) for r, v in zip(records, vectors, strict=True)])
            enrolled[0] += group
            for record, vector in zip(records, vectors, strict=True):
                if collection.nearest(vector.tolist(), 1, -1.0)[0].record_id != record:
                    missed[0] += 1
            # Paced: the next group when the import's rate allows (at once when behind).
            stop.wait(max(0.0, started + enrolled[0] / rate - time.perf_counter()))

    writer = threading.Thread(target=enrol)
    writer.start()
    times = []
    until = time.perf_counter() + IMPORT_SECONDS
    while time.perf_counter() < until:  # the probes again and again, for long enough to see many writes
        for q in queries:
            start = time.perf_counter()
            search(q, None)
            times.append(time.perf_counter() - start)
    stop.set()
    writer.join()
    return {"times": times, "enrolled": enrolled[0], "not_found_at_once": missed[0]}


ENGINES = {
    "exact": _exact,
    "edge": _edge,
    "edge-pq": _edge,
    "edge-binary": _edge,
    "faiss-fastscan": _faiss_fastscan,
    "candor": _candor,
}
#: The setting each engine's runs vary: Qdrant's oversampling, FAISS's shortlist.
SETTINGS = {
    "edge": "oversampling",
    "edge-pq": "oversampling",
    "edge-binary": "oversampling",
    "faiss-fastscan": "candidates",
}


def run_engine(name: str, vectors: str, probes: str, options: dict[str, Any], out: Any) -> None:
    """Build one engine on the memory-mapped vectors, then time single queries; send the figures back.
    numpy's BLAS runs on one thread, as in every Candor service (`candor_kit.cores.one_blas_thread`):
    with OpenBLAS's workers free to spin, each engine kept a second core busy for nothing."""
    from candor_kit.cores import one_blas_thread

    one_blas_thread()
    gallery = np.load(vectors, mmap_mode="r")
    queries = np.load(probes)
    options["vectors"] = vectors
    build, search = ENGINES[name](gallery, queries, options)
    dimension = gallery.shape[1]
    del gallery
    gc.collect()
    runs = []
    for setting in options.get("settings") or [None]:
        search(queries[0], setting)  # warm
        answers, times = [], []
        cpu_before, wall = thread_cpu(), time.perf_counter()
        for q in queries:
            start = time.perf_counter()
            answers.append(search(q, setting))
            times.append(time.perf_counter() - start)
        wall = time.perf_counter() - wall
        cpu = {name: used - cpu_before.get(name, 0.0) for name, used in thread_cpu().items()}
        busy = {name: round(used / wall, 3) for name, used in sorted(cpu.items(), key=lambda kv: -kv[1]) if used > 0}
        runs.append({"setting": setting, "times": times, "answers": answers, "cores_busy": busy})
    rss = {"rss_mb": rss_mb(), "anon_mb": rss_mb("RssAnon"), "file_mb": rss_mb("RssFile")}
    loaded = None
    if "collection" in options:
        loaded = under_import(
            options["collection"], queries, search, dimension, options["import_group"], options["import_rate"]
        )
    out.send({"build_s": build, **rss, "runs": runs, "under_import": loaded, "shard_s": options.get("shard_s")})


def measure(name: str, vectors: str, probes: str, options: dict[str, Any]) -> dict[str, Any]:
    """Run an engine in a fresh process."""
    parent, child = mp.Pipe()
    process = mp.get_context("spawn").Process(target=run_engine, args=(name, vectors, probes, options, child))
    process.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:
        raise SystemExit(f"the {name} run died (exit code {process.join() or process.exitcode})") from None
    process.join()
    return result


def score(
    size: int,
    label: str,
    result: dict[str, Any],
    run: dict[str, Any],
    truth: list[list[int]],
    labels: np.ndarray,
    probe_labels: np.ndarray,
) -> dict[str, Any]:
    """One engine setting's figures: recall@50 against exact, and probes that lost a true mate
    exact search ranks in its top 50."""
    recall = np.mean([len(set(a) & set(t)) / K for a, t in zip(run["answers"], truth, strict=True)])
    lost = sum(
        1
        for answer, exact, probe_label in zip(run["answers"], truth, probe_labels, strict=True)
        if {i for i in exact if labels[i] == probe_label} - set(answer)
    )
    times = np.asarray(run["times"]) * 1000
    return {
        "size": size,
        "engine": label,
        "build_s": round(result["build_s"], 1),
        "rss_mb": round(result["rss_mb"]),
        "anon_mb": round(result["anon_mb"]),
        "file_mb": round(result["file_mb"]),
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p99_ms": round(float(np.percentile(times, 99)), 2),
        "recall_at_50": round(float(recall), 4),
        "probes_losing_a_mate": lost,
    }


def compare(rows: list[dict[str, Any]]) -> str:
    """Candor's p99 against its anchors': the exhaustive scan and FAISS's fast-scan."""
    by = {r["engine"]: r for r in rows}
    candor = by.get("candor")
    if candor is None:
        return ""
    parts = []
    for anchor in ("exact", "edge", "faiss-fastscan candidates=4000"):
        if anchor in by:
            parts.append(f"candor p99 / {anchor} p99: {candor['p99_ms'] / by[anchor]['p99_ms']:.2f}")
    return "; ".join(parts)


def print_row(row: dict[str, Any], probes: int) -> None:
    """One engine setting's line."""
    print(
        f"{row['engine']:32s} build {row['build_s']:7.1f} s  RSS {row['rss_mb']:6d} MiB "
        f"({row['anon_mb']} own, {row['file_mb']} mapped files)  "
        f"p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  recall@50 {row['recall_at_50']:.4f}  "
        f"probes losing a mate {row['probes_losing_a_mate']}/{probes}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="250000,1000000,2500000", help="gallery sizes, comma-separated")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--calibrate", type=Path, default=ROOT.parent / "shared/datasets/att_orl")
    parser.add_argument(
        "--engines",
        default="exact,edge,edge-pq,edge-binary,faiss-fastscan,candor",
        help="exact first: it is the ground truth",
    )
    parser.add_argument("--oversampling", default="20,80", help="Qdrant oversampling for edge-pq and edge-binary")
    parser.add_argument("--candidates", default="2000,4000", help="FAISS fast-scan shortlist sizes")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--import-group",
        type=int,
        default=4,
        help="faces a concurrent import writes at once (the matcher writes what arrives meanwhile together; "
        "an import worker takes CANDOR_IMPORT_BATCH, 4, at a time)",
    )
    parser.add_argument(
        "--import-rate",
        type=float,
        default=100.0,
        help="faces a second the concurrent import enrols (this machine's whole stack imports about 20; "
        "100 is a deployment with detectors and embedders on other machines)",
    )
    args = parser.parse_args()
    engines = args.engines.split(",")
    if engines[0] != "exact":
        raise SystemExit("the first engine must be exact (the ground truth)")

    fit = calibrate(args.calibrate)
    print(
        f"calibrated on {fit['vectors']} real SFace vectors of {fit['subjects']} subjects ({fit['dataset']}): "
        f"median mate distance {fit['real_mate_distance']:.3f}, median centre distance "
        f"{fit['real_centre_distance']:.3f} (Euclidean, unit vectors); load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    settings = {
        "edge-pq": [float(v) for v in args.oversampling.split(",")],
        "edge-binary": [float(v) for v in args.oversampling.split(",")],
        "faiss-fastscan": [float(v) for v in args.candidates.split(",")],
    }
    report: list[dict[str, Any]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        gallery, labels, probes, probe_labels = synthesise(fit, size, args.queries)
        print(f"\n== {size:,} vectors, {labels.max() + 1:,} identities, {len(probes)} probes", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            vectors, probe_file = f"{tmp}/gallery.npy", f"{tmp}/probes.npy"
            np.save(vectors, gallery)
            np.save(probe_file, probes)
            del gallery
            gc.collect()
            truth: list[list[int]] = []
            for engine in engines:
                options = {
                    "workdir": tmp,
                    "quantization": {"edge-pq": "pq", "edge-binary": "binary"}.get(engine, "int8"),
                    "settings": settings.get(engine, []),
                    "import_group": args.import_group,
                    "import_rate": args.import_rate,
                }
                result = measure(engine, vectors, probe_file, options)
                for run in result["runs"]:
                    truth = truth or run["answers"]
                    label = f"{engine} {SETTINGS[engine]}={run['setting']:g}" if run["setting"] else engine
                    report.append(score(size, label, result, run, truth, labels, probe_labels))
                    print_row(report[-1], len(probes))
                    print(f"{'':32s} cores busy by thread while searching: {run['cores_busy']}", flush=True)
                loaded = result.get("under_import")
                if loaded:
                    times = np.asarray(loaded["times"]) * 1000
                    report[-1]["under_import"] = {
                        "p50_ms": round(float(np.percentile(times, 50)), 2),
                        "p99_ms": round(float(np.percentile(times, 99)), 2),
                        "enrolled": loaded["enrolled"],
                        "not_found_at_once": loaded["not_found_at_once"],
                    }
                    report[-1]["shard_build_s"] = round(result["shard_s"], 1)
                    print(
                        f"{'':32s} shard written in {result['shard_s']:.1f} s (index built from it in "
                        f"{result['build_s']:.1f} s); under a concurrent import: {report[-1]['under_import']}",
                        flush=True,
                    )
        print(compare([r for r in report if r["size"] == size]), f"(load average {os.getloadavg()[0]:.2f})", flush=True)
    if args.json:
        kept = ("dataset", "subjects", "vectors", "real_mate_distance", "real_centre_distance")
        args.json.write_text(json.dumps({"calibration": {k: fit[k] for k in kept}, "rows": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

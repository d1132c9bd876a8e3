"""Gallery search at scale: Candor's embedded index beside exact numpy and FAISS HNSW, one run.

    .venv/bin/python bench/gallery_scale.py --sizes 1000000,2500000

The gallery is synthetic but shaped like faces: identity centres and the spread of each
identity's photos are fitted to real dlib embeddings of a labelled set (``--calibrate``,
../shared/datasets/att_orl by default), with 1 to 4 photos per identity as in a booking gallery.
Each probe is a new photo of a gallery identity, so every probe has true mates.

Every engine runs in its own process on the same vectors (a memory-mapped .npy), so each RSS is
its own: index build time, RSS after the build while serving, p50 and p99 of single queries, and
recall@50 against exact search, plus how many probes lost a true mate that exact search ranks in
its top 50. ``edge`` is the matcher's own configuration (`candor_matcher.edge_backend`).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

K = 50
ROOT = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    """This process's resident memory now, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
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
    return gallery, labels, probes.astype(np.float32), probe_labels


# --- engines, each in its own process ------------------------------------------------------------


def _exact(gallery: np.ndarray, probes: np.ndarray, _: dict[str, Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    matrix = np.ascontiguousarray(gallery)
    norms = np.einsum("ij,ij->i", matrix, matrix)
    build = time.perf_counter() - start

    def search(q: np.ndarray, _: int | None) -> list[int]:
        d = norms - 2.0 * (matrix @ q)
        top = np.argpartition(d, K)[:K]
        return top[np.argsort(d[top])].tolist()

    return build, search


def _edge(gallery: np.ndarray, probes: np.ndarray, options: dict[str, Any]) -> tuple[float, Any]:
    from qdrant_edge import (
        Distance,
        EdgeConfig,
        EdgeShard,
        EdgeVectorParams,
        HnswIndexConfig,
        Point,
        Query,
        QueryRequest,
        SearchParams,
        UpdateOperation,
    )

    from candor_matcher.edge_backend import SEARCH_PARAMS, shard_config

    config = shard_config(gallery.shape[1], "euclidean")
    if options.get("hnsw_m"):
        config = EdgeConfig(
            vectors=EdgeVectorParams(size=gallery.shape[1], distance=Distance.Euclid),
            hnsw_config=HnswIndexConfig(
                m=options["hnsw_m"], ef_construct=options["ef_construct"], full_scan_threshold=10_000
            ),
        )
    folder = tempfile.mkdtemp(prefix="candor-scale-")
    start = time.perf_counter()
    shard = EdgeShard.create(f"{folder}/shard", config)
    step = 20_000
    for first in range(0, len(gallery), step):
        block = gallery[first : first + step]
        shard.update(UpdateOperation.upsert_points([Point(first + i, v.tolist(), {}) for i, v in enumerate(block)]))
    shard.flush()
    shard.optimize()
    build = time.perf_counter() - start
    # Serve from the shard as a restarted matcher does: loaded from disk.
    shard.close()
    shard = EdgeShard.load(f"{folder}/shard")

    def search(q: np.ndarray, ef: int | None) -> list[int]:
        params = SearchParams(hnsw_ef=ef) if ef else SEARCH_PARAMS
        found = shard.query(QueryRequest(limit=K, query=Query.Nearest(q.tolist()), params=params))
        return [int(p.id) for p in found]

    return build, search


def _faiss(gallery: np.ndarray, probes: np.ndarray, options: dict[str, Any]) -> tuple[float, Any]:
    import faiss

    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(gallery.shape[1], options["faiss_m"])
    index.hnsw.efConstruction = options["ef_construct"]
    index.add(np.ascontiguousarray(gallery))
    build = time.perf_counter() - start

    def search(q: np.ndarray, ef: int | None) -> list[int]:
        index.hnsw.efSearch = ef
        _, ids = index.search(q.reshape(1, -1), K)
        return ids[0].tolist()

    return build, search


ENGINES = {"exact": _exact, "edge": _edge, "edge-hnsw": _edge, "faiss-hnsw": _faiss}


def run_engine(name: str, vectors: str, probes: str, options: dict[str, Any], out: Any) -> None:
    """Build one engine on the memory-mapped vectors, then time single queries; send the figures back."""
    gallery = np.load(vectors, mmap_mode="r")
    queries = np.load(probes)
    build, search = ENGINES[name](gallery, queries, options)
    del gallery
    gc.collect()
    runs = []
    for ef in options.get("efs") or [None]:
        search(queries[0], ef)  # warm
        answers, times = [], []
        for q in queries:
            start = time.perf_counter()
            answers.append(search(q, ef))
            times.append(time.perf_counter() - start)
        runs.append({"ef": ef, "times": times, "answers": answers})
    out.send(
        {"build_s": build, "rss_mb": rss_mb(), "rss_after_build_mb": options.get("rss_after_build_mb"), "runs": runs}
    )


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
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p99_ms": round(float(np.percentile(times, 99)), 2),
        "recall_at_50": round(float(recall), 4),
        "probes_losing_a_mate": lost,
    }


def compare_with_faiss(rows: list[dict[str, Any]]) -> str:
    """Edge's p99 against the fastest FAISS HNSW setting whose recall is at least edge's."""
    edge = next((r for r in rows if r["engine"] == "edge"), None)
    faiss = [r for r in rows if r["engine"].startswith("faiss")]
    if edge is None or not faiss:
        return ""
    fair = [r for r in faiss if r["recall_at_50"] >= edge["recall_at_50"] - 0.005]
    if fair:
        best = min(fair, key=lambda r: r["p99_ms"])
        return f"edge p99 / FAISS HNSW p99 at equal recall ({best['engine']}): {edge['p99_ms'] / best['p99_ms']:.2f}"
    closest = max(faiss, key=lambda r: r["recall_at_50"])
    return (
        f"no FAISS HNSW setting reached edge's recall@50 ({edge['recall_at_50']:.4f}); the closest, "
        f"{closest['engine']}, reached {closest['recall_at_50']:.4f} at p99 {closest['p99_ms']:.2f} ms"
    )


def print_row(row: dict[str, Any], probes: int) -> None:
    """One engine setting's line."""
    print(
        f"{row['engine']:22s} build {row['build_s']:8.1f} s  RSS {row['rss_mb']:6d} MiB  "
        f"p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  recall@50 {row['recall_at_50']:.4f}  "
        f"probes losing a mate {row['probes_losing_a_mate']}/{probes}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000", help="gallery sizes, comma-separated")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--calibrate", type=Path, default=ROOT.parent / "shared/datasets/att_orl")
    parser.add_argument("--engines", default="exact,edge,faiss-hnsw", help="exact first: it is the ground truth")
    parser.add_argument("--hnsw-m", type=int, default=16, help="graph degree of FAISS HNSW and edge-hnsw")
    parser.add_argument("--ef-construct", type=int, default=100)
    parser.add_argument("--ef", default="128,512,1024", help="hnsw_ef / efSearch values for the graph engines")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    engines = args.engines.split(",")
    if engines[0] != "exact":
        raise SystemExit("the first engine must be exact (the ground truth)")

    fit = calibrate(args.calibrate)
    print(
        f"calibrated on {fit['vectors']} real dlib vectors of {fit['subjects']} subjects ({fit['dataset']}): median "
        f"mate distance {fit['real_mate_distance']:.3f}, median centre distance {fit['real_centre_distance']:.3f}",
        flush=True,
    )
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
                graph = engine in ("faiss-hnsw", "edge-hnsw")
                options = {
                    "faiss_m": args.hnsw_m,
                    "hnsw_m": args.hnsw_m if engine == "edge-hnsw" else 0,
                    "ef_construct": args.ef_construct,
                    "efs": [int(e) for e in args.ef.split(",")] if graph else [],
                }
                result = measure(engine, vectors, probe_file, options)
                for run in result["runs"]:
                    truth = truth or run["answers"]
                    label = f"{engine} ef={run['ef']}" if run["ef"] else engine
                    report.append(score(size, label, result, run, truth, labels, probe_labels))
                    print_row(report[-1], len(probes))
        print(compare_with_faiss([r for r in report if r["size"] == size]))
    if args.json:
        kept = ("dataset", "subjects", "vectors", "real_mate_distance", "real_centre_distance")
        args.json.write_text(json.dumps({"calibration": {k: fit[k] for k in kept}, "rows": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

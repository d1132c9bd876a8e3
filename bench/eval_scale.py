"""Peak memory and time of scoring every pair of a dataset without a pair list, as `candor eval`
does: this code against its anchor (the code before it), each in a fresh process, in one run.

The anchor built a Pair object per pair and stacked both vectors of every pair (two 128-float
rows a pair): a dataset of about 7,700 images of 4,300 identities (29.6 million pairs) needed
over 30 GB and was killed on a 24 GB machine. The current code computes distances in blocks of
rows and keeps 7 bytes a pair. The vectors here are synthetic (clustered by identity, 128-d, four
groups): scoring cost does not depend on where the vectors came from.

    python bench/eval_scale.py [--compare-images 2000] [--images 7700] [--identities 4300]
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from candor_eval.dataset import Dataset, LabelledImage, Pair
from candor_eval.embedding import Embedded
from candor_eval.evaluate import pair_scores, summarise


def synthetic(count: int, identities: int, seed: int = 11) -> tuple[Dataset, list[Embedded]]:
    """``count`` vectors of ``identities`` people (at least one image each), four groups."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.2, (identities, 128))
    people = [i % identities for i in range(count)]
    images = [LabelledImage(f"p{p:05d}", Path(f"/synthetic/{i}.jpg")) for i, p in enumerate(people)]
    vectors = (centres[people] + rng.normal(0, 0.03, (count, 128))).astype(np.float32)
    groups = {f"p{p:05d}": "ABCD"[p % 4] for p in range(identities)}
    dataset = Dataset(root=Path("/synthetic"), images=images, groups=groups)
    return dataset, [Embedded(image, vector) for image, vector in zip(images, vectors, strict=True)]


def anchor_pair_scores(dataset: Dataset, embedded: list[Embedded]) -> tuple[np.ndarray, np.ndarray, list]:  # type: ignore[type-arg]
    """The scoring before this change: one Pair per pair, both vectors of each pair stacked."""
    vectors = {e.image.key: e.vector for e in embedded}
    images = {e.image.key: e.image for e in embedded}
    keys = sorted(vectors)
    pairs = [Pair(a, b, images[a].identity == images[b].identity) for a, b in itertools.combinations(keys, 2)]
    left = np.stack([vectors[p.left] for p in pairs])
    right = np.stack([vectors[p.right] for p in pairs])
    distances = np.linalg.norm(left - right, axis=1)
    groups = []
    for pair in pairs:
        a, b = dataset.group_of(images[pair.left]), dataset.group_of(images[pair.right])
        groups.append(a if a == b else None)
    return distances, np.array([p.mated for p in pairs]), groups


def measure(variant: str, count: int, identities: int) -> dict[str, float]:
    """Run one variant in this process: seconds, and the process's peak resident memory."""
    dataset, embedded = synthetic(count, identities)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if variant == "anchor":
        distances, _, _ = anchor_pair_scores(dataset, embedded)
        pairs = distances.size
    elif variant == "scores":
        pairs = pair_scores(dataset, embedded).distances.size
    else:  # the whole evaluation: scores, verification, identification, per group
        summarise(dataset, embedded, 0.6)
        pairs = count * (count - 1) // 2
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_mb": peak / 1024, "added_mb": (peak - baseline) / 1024, "pairs": pairs}


def run(variant: str, count: int, identities: int) -> dict[str, float]:
    """``measure`` in a fresh process, so each peak is its own."""
    output = subprocess.run(
        [sys.executable, __file__, "--measure", variant, "--images", str(count), "--identities", str(identities)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare-images", type=int, default=2000)
    parser.add_argument("--images", type=int, default=7700)
    parser.add_argument("--identities", type=int, default=4300)
    parser.add_argument("--measure", choices=("anchor", "scores", "summary"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.images, args.identities)))
        return

    small_ids = round(args.compare_images * args.identities / args.images)
    print(f"side by side: {args.compare_images} images of {small_ids} identities")
    anchor = run("anchor", args.compare_images, small_ids)
    current = run("scores", args.compare_images, small_ids)
    for name, figures in (("anchor (before)", anchor), ("blocks (now)", current)):
        print(
            f"  {name:<16} {figures['pairs']:>12,.0f} pairs  {figures['seconds']:7.2f} s  "
            f"+{figures['added_mb']:8.0f} MB  ({figures['added_mb'] * 2**20 / figures['pairs']:6.1f} bytes a pair)"
        )
    print(f"  memory ratio anchor/now {anchor['added_mb'] / current['added_mb']:.1f}x, "
          f"time ratio {anchor['seconds'] / current['seconds']:.1f}x")  # fmt: skip
    pairs = args.images * (args.images - 1) // 2
    per_pair = anchor["added_mb"] * 2**20 / anchor["pairs"]
    print(f"{args.images} images of {args.identities} identities: {pairs:,} pairs")
    print(f"  anchor, extrapolated at {per_pair:.0f} bytes a pair: {per_pair * pairs / 2**30:.1f} GB")
    for variant, label in (("scores", "pair scores"), ("summary", "whole evaluation")):
        figures = run(variant, args.images, args.identities)
        print(f"  now, {label:<17} {figures['seconds']:7.1f} s  peak {figures['peak_mb'] / 1024:5.2f} GB")


if __name__ == "__main__":
    main()

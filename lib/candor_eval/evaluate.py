"""From embeddings to the evaluation's figures: verification, identification, per group, failures."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from candor_eval.dataset import Dataset, Pair
from candor_eval.embedding import Embedded
from candor_eval.metrics import (
    GroupRates,
    SearchOutcome,
    equal_error_rate,
    error_curve,
    fmr_at,
    fnir_at,
    fnir_at_fpir,
    fnmr_at,
    kfold_accuracy,
    per_group_rates,
    rank_hit_rate,
    tar_at_fmr,
)

FMR_TARGETS = (1e-2, 1e-3, 1e-4)
FPIR_TARGETS = (0.01, 0.003)
CANDIDATE_LIST = 20


@dataclass
class PairScores:
    """Distances of the mated and non-mated pairs, with each pair's group and fold."""

    distances: np.ndarray
    mated: np.ndarray
    groups: list[str | None]
    folds: np.ndarray | None

    @property
    def genuine(self) -> np.ndarray:
        """Mated-pair distances."""
        return self.distances[self.mated]

    @property
    def impostor(self) -> np.ndarray:
        """Non-mated-pair distances."""
        return self.distances[~self.mated]

    def group_rates(self, threshold: float, min_pairs: int) -> list[GroupRates]:
        """Each group's FMR and FNMR at one threshold, over the pairs that carry a group."""
        genuine: dict[str, list[float]] = {}
        impostor: dict[str, list[float]] = {}
        for distance, mated, group in zip(self.distances, self.mated, self.groups, strict=True):
            if group is not None:
                (genuine if mated else impostor).setdefault(group, []).append(float(distance))
        return per_group_rates(genuine, impostor, threshold, min_pairs)


def pair_scores(dataset: Dataset, embedded: list[Embedded]) -> PairScores:
    """Distances for the dataset's pair list, or for every pair of enrolled images when it has none.

    A pair with a failed image is left out (failures are reported on their own). Without a pair
    list, a non-mated pair's group is set only when both identities share it, as NISTIR 8280
    compares demographically matched impostors.
    """
    vectors = {e.image.key: e.vector for e in embedded if e.vector is not None}
    images = {e.image.key: e.image for e in embedded}
    if dataset.pairs is not None:
        pairs = [p for p in dataset.pairs if p.left in vectors and p.right in vectors]
    else:
        keys = sorted(vectors)
        pairs = [Pair(a, b, images[a].identity == images[b].identity) for a, b in itertools.combinations(keys, 2)]
    if not pairs:
        raise ValueError("no scorable pairs: every image failed to enrol")
    left = np.stack([vectors[p.left] for p in pairs])
    right = np.stack([vectors[p.right] for p in pairs])
    distances = np.linalg.norm(left - right, axis=1)
    groups = []
    for pair in pairs:
        a, b = dataset.group_of(images[pair.left]), dataset.group_of(images[pair.right])
        groups.append(a if a == b else None)
    folds = np.array([p.fold for p in pairs]) if all(p.fold is not None for p in pairs) else None
    return PairScores(distances, np.array([p.mated for p in pairs]), groups, folds)


def identification(embedded: list[Embedded], hold_out_every: int = 5) -> list[SearchOutcome]:
    """1:N searches: each identity's first enrolled image is its gallery entry, except every
    ``hold_out_every``-th identity, kept out of the gallery so its images are non-mated probes."""
    by_identity: dict[str, list[Embedded]] = {}
    for item in embedded:
        if item.vector is not None:
            by_identity.setdefault(item.image.identity, []).append(item)
    identities = sorted(by_identity)
    held_out = set(identities[hold_out_every - 1 :: hold_out_every])
    gallery_ids = [i for i in identities if i not in held_out]
    if not gallery_ids:
        return []
    gallery = np.stack([by_identity[i][0].vector for i in gallery_ids])  # type: ignore[misc]
    probes = [(item, False) for i in held_out for item in by_identity[i]]
    probes += [(item, True) for i in gallery_ids for item in by_identity[i][1:]]
    outcomes = []
    for item, mated in probes:
        distances = np.linalg.norm(gallery - item.vector, axis=1)
        order = np.argsort(distances)[:CANDIDATE_LIST]
        outcomes.append(
            SearchOutcome(
                probe_identity=item.image.identity,
                mated=mated,
                candidate_identities=tuple(gallery_ids[j] for j in order),
                candidate_distances=tuple(float(distances[j]) for j in order),
            )
        )
    return outcomes


def summarise(
    dataset: Dataset,
    embedded: list[Embedded],
    operating_threshold: float,
    min_group_pairs: int = 20,
    scores: PairScores | None = None,
) -> dict[str, Any]:
    """Every figure of the evaluation, as a JSON-ready dict (``scores`` when already computed)."""
    scores = scores or pair_scores(dataset, embedded)
    gen, imp = scores.genuine, scores.impostor
    eer, eer_threshold = equal_error_rate(gen, imp) if gen.size and imp.size else (float("nan"), float("nan"))
    tar = {}
    for target in FMR_TARGETS:
        result = tar_at_fmr(gen, imp, target)
        tar[f"{target:g}"] = None if result is None else {"tar": result[0], "threshold": result[1]}
    verification: dict[str, Any] = {
        "mated_pairs": int(gen.size),
        "non_mated_pairs": int(imp.size),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "tar_at_fmr": tar,
        "at_operating_threshold": {
            "threshold": operating_threshold,
            "fmr": fmr_at(imp, operating_threshold),
            "fnmr": fnmr_at(gen, operating_threshold),
        },
    }
    if scores.folds is not None:
        mean, std, per_fold = kfold_accuracy(scores.distances, scores.mated, scores.folds)
        verification["kfold_accuracy"] = {"mean": mean, "std": std, "per_fold": per_fold}

    searches = identification(embedded)
    ident: dict[str, Any] = {
        "mated_searches": sum(1 for s in searches if s.mated),
        "non_mated_searches": sum(1 for s in searches if not s.mated),
        "rank1": rank_hit_rate(searches, 1),
        "rank10": rank_hit_rate(searches, 10),
        "investigation_rank1_miss_rate": fnir_at(searches, float("inf"), 1),
        "fnir_at_fpir": {},
    }
    for target in FPIR_TARGETS:
        result = fnir_at_fpir(searches, target, CANDIDATE_LIST)
        ident["fnir_at_fpir"][f"{target:g}"] = None if result is None else {"fnir": result[0], "threshold": result[1]}

    groups = [rate.__dict__ for rate in scores.group_rates(operating_threshold, min_group_pairs)]

    failures = Counter(e.failure for e in embedded if e.vector is None)
    return {
        "dataset": {
            "root": str(dataset.root),
            "images": len(dataset.images),
            "identities": len({i.identity for i in dataset.images}),
        },
        # Images where the largest of several faces was taken: worth a look in a crowded dataset.
        "images_with_several_faces": sum(1 for e in embedded if e.faces_found > 1),
        "failure_to_enrol": {
            "count": sum(failures.values()),
            "rate": sum(failures.values()) / max(len(embedded), 1),
            "reasons": dict(failures),
        },
        "verification": verification,
        "identification": ident,
        "per_group": {"threshold": operating_threshold, "min_pairs": min_group_pairs, "groups": groups},
    }


def curves(scores: PairScores) -> dict[str, Any]:
    """The DET curves (overall and per group) and the raw distances, for plotting."""
    result: dict[str, Any] = {
        "overall": error_curve(scores.genuine, scores.impostor),
        "genuine": scores.genuine,
        "impostor": scores.impostor,
        "groups": {},
    }
    for group in sorted({g for g in scores.groups if g is not None}):
        mask = np.array([g == group for g in scores.groups])
        gen, imp = scores.distances[mask & scores.mated], scores.distances[mask & ~scores.mated]
        if gen.size and imp.size:
            result["groups"][group] = error_curve(gen, imp)
    return result

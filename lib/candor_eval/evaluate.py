"""From embeddings to the evaluation's figures: verification, identification, per group, failures."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from candor_eval.dataset import Dataset, LabelledImage
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
    group_search_rates,
    kfold_accuracy,
    per_group_rates,
    rank_hit_rate,
    search_rates,
    tar_at_fmr,
)

FMR_TARGETS = (1e-2, 1e-3, 1e-4)
FPIR_TARGETS = (0.01, 0.003)
CANDIDATE_LIST = 20


#: Rows of the distance matrix computed at once: 256 rows of 7,700 columns is 16 MB of float64.
BLOCK_ROWS = 256
NO_GROUP = -1


@dataclass
class PairScores:
    """Distances of the mated and non-mated pairs, with each pair's group and fold.

    Held as flat arrays, 7 bytes a pair (float32 distance, bool, int16 group code), never as an
    object per pair: every pair of 7,700 images (29.6 million pairs) takes 207 MB.
    """

    distances: np.ndarray  # float32
    mated: np.ndarray  # bool
    group_codes: np.ndarray  # int16 index into group_names; NO_GROUP when the pair has none
    group_names: list[str]
    folds: np.ndarray | None

    @property
    def genuine(self) -> np.ndarray:
        """Mated-pair distances."""
        return self.distances[self.mated]

    @property
    def impostor(self) -> np.ndarray:
        """Non-mated-pair distances."""
        return self.distances[~self.mated]

    def by_group(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each group's (mated, non-mated) distances, over the pairs that carry the group."""
        result = {}
        for code, name in enumerate(self.group_names):
            mask = self.group_codes == code
            result[name] = (self.distances[mask & self.mated], self.distances[mask & ~self.mated])
        return result

    def group_rates(self, threshold: float, min_pairs: int) -> list[GroupRates]:
        """Each group's FMR and FNMR at one threshold, over the pairs that carry a group."""
        split = self.by_group()
        genuine = {name: gen for name, (gen, _) in split.items()}
        impostor = {name: imp for name, (_, imp) in split.items()}
        return per_group_rates(genuine, impostor, threshold, min_pairs)


def _group_codes(dataset: Dataset, images: list[LabelledImage]) -> tuple[np.ndarray, list[str]]:
    """Each image's group as a code into the sorted group names (NO_GROUP for none)."""
    labels = [dataset.group_of(image) for image in images]
    names = sorted({label for label in labels if label is not None})
    index = {name: code for code, name in enumerate(names)}
    return np.array([index.get(label, NO_GROUP) for label in labels], dtype=np.int16), names  # type: ignore[arg-type]


def _as_metric(squared: np.ndarray, metric: str) -> np.ndarray:
    """Distances in the model's metric from squared Euclidean distances: the Euclidean distance,
    or for a cosine model (unit vectors) the cosine distance, 1 - cos = |a - b|^2 / 2."""
    return squared / 2.0 if metric == "cosine" else np.sqrt(squared)


def _every_pair(
    vectors: np.ndarray, identities: np.ndarray, groups: np.ndarray, metric: str = "euclidean"
) -> tuple[np.ndarray, ...]:
    """Distances, matedness and group codes of every unordered pair, in blocks of rows.

    Pair (i, j), i < j, lands in row-major order of the upper triangle. A non-mated pair carries
    a group only when both identities share it, as NISTIR 8280 compares demographically matched
    impostors; a mated pair carries its identity's group.
    """
    count = len(vectors)
    total = count * (count - 1) // 2
    distances = np.empty(total, dtype=np.float32)
    mated = np.empty(total, dtype=bool)
    codes = np.empty(total, dtype=np.int16)
    as64 = vectors.astype(np.float64)
    squares = np.einsum("ij,ij->i", as64, as64)
    at = 0
    for start in range(0, count - 1, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, count - 1)
        block = squares[start:stop, None] + squares[None, start:] - 2.0 * (as64[start:stop] @ as64[start:].T)
        np.maximum(block, 0.0, out=block)
        for row in range(start, stop):
            width = count - row - 1
            right = slice(row + 1, count)
            distances[at : at + width] = _as_metric(block[row - start, row - start + 1 :], metric)
            mated[at : at + width] = identities[right] == identities[row]
            codes[at : at + width] = np.where(groups[right] == groups[row], groups[row], NO_GROUP)
            at += width
    return distances, mated, codes


def pair_scores(dataset: Dataset, embedded: list[Embedded], metric: str = "euclidean") -> PairScores:
    """Distances (in the model's ``metric``) for the dataset's pair list, or for every pair of
    enrolled images when it has none.

    A pair with a failed image is left out (failures are reported on their own). Without a pair
    list, a non-mated pair's group is set only when both identities share it.
    """
    enrolled = sorted((e for e in embedded if e.vector is not None), key=lambda e: e.image.key)
    if dataset.pairs is None:
        if len(enrolled) < 2:
            raise ValueError("no scorable pairs: fewer than two images enrolled")
        vectors = np.stack([e.vector for e in enrolled]).astype(np.float32)  # type: ignore[misc]
        names = sorted({e.image.identity for e in enrolled})
        identity_index = {name: code for code, name in enumerate(names)}
        identities = np.array([identity_index[e.image.identity] for e in enrolled], dtype=np.int32)
        groups, group_names = _group_codes(dataset, [e.image for e in enrolled])
        distances, mated, codes = _every_pair(vectors, identities, groups, metric)
        return PairScores(distances, mated, codes, group_names, None)
    position = {e.image.key: i for i, e in enumerate(enrolled)}
    pairs = [p for p in dataset.pairs if p.left in position and p.right in position]
    if not pairs:
        raise ValueError("no scorable pairs: every image failed to enrol")
    vectors = np.stack([e.vector for e in enrolled]).astype(np.float32)  # type: ignore[misc]
    left = np.array([position[p.left] for p in pairs])
    right = np.array([position[p.right] for p in pairs])
    squared = np.sum((vectors[left].astype(np.float64) - vectors[right]) ** 2, axis=1)
    distances = _as_metric(squared, metric).astype(np.float32)
    groups, group_names = _group_codes(dataset, [e.image for e in enrolled])
    codes = np.where(groups[left] == groups[right], groups[left], NO_GROUP).astype(np.int16)
    folds = np.array([p.fold for p in pairs]) if all(p.fold is not None for p in pairs) else None
    return PairScores(distances, np.array([p.mated for p in pairs]), codes, group_names, folds)


def identification(
    embedded: list[Embedded], metric: str = "euclidean", group_of: Mapping[str, str] | None = None
) -> list[SearchOutcome]:
    """1:N searches as the NIST FRTE protocol builds them from a labelled set, in two folds.

    Of the identities with two or more enrolled images, every other one (in name order, within
    each group of ``group_of`` so every group has mated and non-mated searches) is in the gallery
    with its first image, and its other images are mated probes; the others are not in the
    gallery, and each of their images is a non-mated probe. An identity with one image is in the
    gallery as a distractor. The second fold swaps the halves, so every person is searched for
    both as one enrolled and as a stranger: twice the searches a small set would give. Each
    search returns the nearest ``CANDIDATE_LIST`` entries.
    """
    by_identity: dict[str, list[Embedded]] = {}
    for item in embedded:
        if item.vector is not None:
            by_identity.setdefault(item.image.identity, []).append(item)
    strata: dict[str | None, list[str]] = {}
    for identity in sorted(identity for identity, items in by_identity.items() if len(items) > 1):
        strata.setdefault((group_of or {}).get(identity), []).append(identity)
    outcomes = []
    for fold in (1, 0):
        held_out = {identity for members in strata.values() for identity in members[fold::2]}
        outcomes += _one_fold(by_identity, held_out, metric)
    return outcomes


def _one_fold(by_identity: dict[str, list[Embedded]], held_out: set[str], metric: str) -> list[SearchOutcome]:
    """The searches of one gallery: every identity but ``held_out``, by its first image."""
    gallery_ids = sorted(identity for identity in by_identity if identity not in held_out)
    if not gallery_ids:
        return []
    gallery = np.stack([by_identity[i][0].vector for i in gallery_ids])  # type: ignore[misc]
    probes = [(item, False) for i in sorted(held_out) for item in by_identity[i]]
    probes += [(item, True) for i in gallery_ids for item in by_identity[i][1:]]
    outcomes = []
    for item, mated in probes:
        distances = _as_metric(np.sum((gallery - item.vector) ** 2, axis=1), metric)
        order = np.argsort(distances, kind="stable")[:CANDIDATE_LIST]
        outcomes.append(
            SearchOutcome(
                probe_identity=item.image.identity,
                mated=mated,
                candidate_identities=tuple(gallery_ids[j] for j in order),
                candidate_distances=tuple(float(distances[j]) for j in order),
            )
        )
    return outcomes


def identification_summary(
    groups: Mapping[str, str],
    searches: list[SearchOutcome],
    operating_threshold: float,
    min_searches: int = 20,
) -> dict[str, Any]:
    """Rank-1 and rank-10 hit rates, FNIR at fixed FPIRs, and FNIR and FPIR at the live threshold
    (with intervals), overall and for each group of the probes' identities (``groups``, identity to
    group) at the same thresholds."""
    ident: dict[str, Any] = {
        "protocol": "two folds: every other identity with several images in the gallery (its first image), "
        "the rest non-mated, then the halves swapped; single-image identities as gallery distractors",
        "mated_searches": sum(1 for s in searches if s.mated),
        "non_mated_searches": sum(1 for s in searches if not s.mated),
        "rank1": rank_hit_rate(searches, 1),
        "rank10": rank_hit_rate(searches, 10),
        "investigation_rank1_miss_rate": fnir_at(searches, float("inf"), 1),
        "fnir_at_fpir": {},
        "at_live_threshold": search_rates(searches, operating_threshold, CANDIDATE_LIST, min_searches),
    }
    thresholds = {"at_live_threshold": operating_threshold}
    for target in FPIR_TARGETS:
        result = fnir_at_fpir(searches, target, CANDIDATE_LIST)
        ident["fnir_at_fpir"][f"{target:g}"] = None if result is None else {"fnir": result[0], "threshold": result[1]}
        if result is not None:
            thresholds[f"at_fpir_{target:g}"] = result[1]
    ident["per_group"] = group_search_rates(searches, groups, thresholds, CANDIDATE_LIST, min_searches)
    return ident


def identity_groups(dataset: Dataset) -> dict[str, str]:
    """Each labelled identity's group (that of its first image)."""
    groups: dict[str, str] = {}
    for image in dataset.images:
        group = dataset.group_of(image)
        if group is not None:
            groups.setdefault(image.identity, group)
    return groups


def summarise(
    dataset: Dataset,
    embedded: list[Embedded],
    operating_threshold: float,
    min_group_pairs: int = 20,
    scores: PairScores | None = None,
    metric: str = "euclidean",
) -> dict[str, Any]:
    """Every figure of the evaluation, as a JSON-ready dict (``scores`` when already computed),
    with distances in the model's ``metric``."""
    scores = scores or pair_scores(dataset, embedded, metric)
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

    identities = identity_groups(dataset)
    searches = identification(embedded, metric, identities)
    ident = identification_summary(identities, searches, operating_threshold)

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
    """The DET curves (overall and per group) and the distances, for plotting."""
    gen, imp = scores.genuine, scores.impostor
    result: dict[str, Any] = {"overall": error_curve(gen, imp), "genuine": gen, "impostor": imp, "groups": {}}
    for group, (group_gen, group_imp) in scores.by_group().items():
        if group_gen.size and group_imp.size:
            result["groups"][group] = error_curve(group_gen, group_imp)
    return result

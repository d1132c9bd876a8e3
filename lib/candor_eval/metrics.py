"""Biometric accuracy metrics on distances (smaller = more alike), in plain numpy.

Verification follows ISO/IEC 19795-1: a pair is accepted when its distance is at or under the
threshold; FMR is the share of non-mated pairs accepted, FNMR the share of mated pairs rejected.
Identification follows NIST FRTE (NISTIR 8271): FPIR is the share of non-mated searches that
return any candidate at or under the threshold; FNIR the share of mated searches whose mate is
not returned at or under the threshold within the candidate list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from candor_kit.rates import clopper_pearson

#: Confidence of the intervals given with each group's rates.


@dataclass(frozen=True)
class ErrorCurve:
    """FMR and FNMR at every distinct threshold, thresholds ascending."""

    thresholds: np.ndarray
    fmr: np.ndarray
    fnmr: np.ndarray


def _as_array(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).ravel()


def fmr_at(impostor: Sequence[float] | np.ndarray, threshold: float) -> float:
    """Share of non-mated distances at or under the threshold."""
    imp = _as_array(impostor)
    return float(np.mean(imp <= threshold)) if imp.size else float("nan")


def fnmr_at(genuine: Sequence[float] | np.ndarray, threshold: float) -> float:
    """Share of mated distances over the threshold."""
    gen = _as_array(genuine)
    return float(np.mean(gen > threshold)) if gen.size else float("nan")


def error_curve(genuine: Sequence[float] | np.ndarray, impostor: Sequence[float] | np.ndarray) -> ErrorCurve:
    """The DET/ROC curve: FMR and FNMR at each distinct observed distance."""
    gen, imp = np.sort(_as_array(genuine)), np.sort(_as_array(impostor))
    thresholds = np.unique(np.concatenate([gen, imp]))
    fmr = np.searchsorted(imp, thresholds, side="right") / max(imp.size, 1)
    fnmr = 1.0 - np.searchsorted(gen, thresholds, side="right") / max(gen.size, 1)
    return ErrorCurve(thresholds, fmr, fnmr)


def threshold_for_fmr(impostor: Sequence[float] | np.ndarray, target_fmr: float) -> float | None:
    """The largest threshold whose FMR does not exceed the target.

    None when there are too few non-mated pairs to measure that FMR (fewer than 1 / target).
    """
    imp = np.sort(_as_array(impostor))
    if imp.size == 0 or imp.size * target_fmr < 1.0 - 1e-9:
        return None
    allowed = int(np.floor(target_fmr * imp.size + 1e-9))  # non-mated acceptances the target tolerates
    if allowed >= imp.size:
        return float(imp[-1])
    # Just under the (allowed + 1)-th smallest non-mated distance; ties there are all rejected.
    return float(np.nextafter(imp[allowed], -np.inf))


def tar_at_fmr(
    genuine: Sequence[float] | np.ndarray, impostor: Sequence[float] | np.ndarray, target_fmr: float
) -> tuple[float, float] | None:
    """(TAR, threshold) at the target FMR, or None when the pairs cannot support it."""
    threshold = threshold_for_fmr(impostor, target_fmr)
    if threshold is None:
        return None
    return 1.0 - fnmr_at(genuine, threshold), threshold


def equal_error_rate(
    genuine: Sequence[float] | np.ndarray, impostor: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """(EER, threshold): where FMR and FNMR cross, interpolated between observed thresholds."""
    curve = error_curve(genuine, impostor)
    diff = curve.fmr - curve.fnmr
    crossing = int(np.argmax(diff >= 0)) if np.any(diff >= 0) else len(diff) - 1
    if crossing == 0 or diff[crossing] == 0:
        return float((curve.fmr[crossing] + curve.fnmr[crossing]) / 2), float(curve.thresholds[crossing])
    lo, hi = crossing - 1, crossing
    weight = -diff[lo] / (diff[hi] - diff[lo])
    eer = curve.fnmr[lo] + weight * (curve.fnmr[hi] - curve.fnmr[lo])
    threshold = curve.thresholds[lo] + weight * (curve.thresholds[hi] - curve.thresholds[lo])
    return float(eer), float(threshold)


def best_accuracy_threshold(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """The threshold that classifies the most pairs correctly.

    Accuracy is flat from the best observed distance up to the next one; the middle of that
    interval is chosen, so a held-out pair just past the training pairs is not penalised.
    """
    curve = error_curve(genuine, impostor)
    correct = np.rint((1 - curve.fnmr) * genuine.size + (1 - curve.fmr) * impostor.size)
    best = int(np.argmax(correct))
    end = best
    while end + 1 < len(correct) and correct[end + 1] == correct[best]:
        end += 1
    if end + 1 < len(curve.thresholds):
        return float((curve.thresholds[best] + curve.thresholds[end + 1]) / 2)
    return float(curve.thresholds[best])


def kfold_accuracy(distances: np.ndarray, mated: np.ndarray, folds: np.ndarray) -> tuple[float, float, list[float]]:
    """LFW-protocol accuracy: each fold is scored at the threshold chosen on the other folds.

    Returns (mean accuracy, standard deviation, per-fold accuracies).
    """
    accuracies = []
    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        threshold = best_accuracy_threshold(distances[train & mated], distances[train & ~mated])
        predicted = distances[test] <= threshold
        accuracies.append(float(np.mean(predicted == mated[test])))
    return float(np.mean(accuracies)), float(np.std(accuracies)), accuracies


@dataclass(frozen=True)
class SearchOutcome:
    """One 1:N search: its candidates' distances and identities, nearest first."""

    probe_identity: str
    mated: bool
    candidate_identities: tuple[str, ...]
    candidate_distances: tuple[float, ...]

    def mate_rank(self) -> int | None:
        """1-based rank of the probe's own identity among the candidates, if present."""
        for rank, identity in enumerate(self.candidate_identities, start=1):
            if identity == self.probe_identity:
                return rank
        return None


def rank_hit_rate(searches: Sequence[SearchOutcome], k: int) -> float:
    """Share of mated searches whose mate is within the top k, with no threshold."""
    mated = [s for s in searches if s.mated]
    if not mated:
        return float("nan")
    return sum(1 for s in mated if (rank := s.mate_rank()) is not None and rank <= k) / len(mated)


def fpir_at(searches: Sequence[SearchOutcome], threshold: float) -> float:
    """Share of non-mated searches that return any candidate at or under the threshold."""
    non_mated = [s for s in searches if not s.mated]
    if not non_mated:
        return float("nan")
    return sum(1 for s in non_mated if s.candidate_distances and s.candidate_distances[0] <= threshold) / len(non_mated)


def fnir_at(searches: Sequence[SearchOutcome], threshold: float, max_rank: int) -> float:
    """Share of mated searches whose mate is not returned at or under the threshold within max_rank."""
    mated = [s for s in searches if s.mated]
    if not mated:
        return float("nan")

    def found(search: SearchOutcome) -> bool:
        rank = search.mate_rank()
        return rank is not None and rank <= max_rank and search.candidate_distances[rank - 1] <= threshold

    return sum(1 for s in mated if not found(s)) / len(mated)


def fnir_at_fpir(searches: Sequence[SearchOutcome], target_fpir: float, max_rank: int) -> tuple[float, float] | None:
    """(FNIR, threshold) at the largest threshold whose FPIR does not exceed the target.

    None when there are too few non-mated searches to measure that FPIR.
    """
    top = [s.candidate_distances[0] if s.candidate_distances else np.inf for s in searches if not s.mated]
    threshold = threshold_for_fmr(top, target_fpir)
    if threshold is None:
        return None
    return fnir_at(searches, threshold, max_rank), threshold


@dataclass(frozen=True)
class GroupRates:
    """One demographic group's error rates at the shared operating threshold, each with its
    95 % Clopper-Pearson interval (None where the group has too few pairs to measure the rate)."""

    group: str
    mated_pairs: int
    non_mated_pairs: int
    fmr: float | None
    fnmr: float | None
    fmr_ratio_to_lowest: float | None
    fmr_ci: tuple[float, float] | None = None
    fnmr_ci: tuple[float, float] | None = None


def per_group_rates(
    genuine_by_group: Mapping[str, Sequence[float]],
    impostor_by_group: Mapping[str, Sequence[float]],
    threshold: float,
    min_pairs: int = 20,
) -> list[GroupRates]:
    """FMR and FNMR per group at one threshold for everyone (the NISTIR 8280 method).

    A group with fewer than ``min_pairs`` pairs of a kind gets None for that rate instead of a
    figure; the FMR ratio is against the lowest measured nonzero FMR.
    """
    groups = sorted(set(genuine_by_group) | set(impostor_by_group))
    raw = []
    for group in groups:
        gen = np.asarray(genuine_by_group.get(group, ())).ravel()
        imp = np.asarray(impostor_by_group.get(group, ())).ravel()
        false_matches, false_non_matches = (
            int(np.count_nonzero(imp <= threshold)),
            int(np.count_nonzero(gen > threshold)),
        )
        fmr = (false_matches / imp.size, clopper_pearson(false_matches, imp.size)) if imp.size >= min_pairs else None
        fnmr = (
            (false_non_matches / gen.size, clopper_pearson(false_non_matches, gen.size))
            if gen.size >= min_pairs
            else None
        )
        raw.append((group, gen.size, imp.size, fmr, fnmr))
    measured = [fmr[0] for *_, fmr, _ in raw if fmr is not None and fmr[0] > 0]
    lowest = min(measured) if measured else None
    return [
        GroupRates(
            group=group,
            mated_pairs=int(n_gen),
            non_mated_pairs=int(n_imp),
            fmr=fmr and fmr[0],
            fnmr=fnmr and fnmr[0],
            fmr_ratio_to_lowest=(fmr[0] / lowest) if (fmr is not None and lowest) else None,
            fmr_ci=fmr and fmr[1],
            fnmr_ci=fnmr and fnmr[1],
        )
        for group, n_gen, n_imp, fmr, fnmr in raw
    ]


def measured_rate(count: int, trials: int, min_trials: int) -> dict[str, object] | None:
    """``count`` of ``trials`` as a rate with its 95 % Clopper-Pearson interval, or None under
    ``min_trials``."""
    if trials < min_trials or trials == 0:
        return None
    return {"rate": count / trials, "ci": clopper_pearson(count, trials), "count": count, "trials": trials}


def search_rates(
    searches: Sequence[SearchOutcome], threshold: float, max_rank: int, min_searches: int = 20
) -> dict[str, object]:
    """FNIR and FPIR at one threshold, each with its interval (None with too few searches)."""
    mated = [s for s in searches if s.mated]
    non_mated = [s for s in searches if not s.mated]
    misses = round(fnir_at(mated, threshold, max_rank) * len(mated)) if mated else 0
    false_positives = round(fpir_at(non_mated, threshold) * len(non_mated)) if non_mated else 0
    return {
        "threshold": threshold,
        "fnir": measured_rate(misses, len(mated), min_searches),
        "fpir": measured_rate(false_positives, len(non_mated), min_searches),
    }


def group_search_rates(
    searches: Sequence[SearchOutcome],
    group_of: Mapping[str, str],
    thresholds: Mapping[str, float],
    max_rank: int,
    min_searches: int = 20,
) -> list[dict[str, object]]:
    """1:N figures per group of the probe's identity, every group at the same thresholds.

    Each group gets its rank-1 hit rate and, at each named threshold (the one giving a fixed FPIR
    overall, the live threshold), its FNIR and FPIR, all with 95 % intervals; a rate over fewer
    than ``min_searches`` searches is None rather than a figure that would mislead.
    """
    by_group: dict[str, list[SearchOutcome]] = {}
    for search in searches:
        group = group_of.get(search.probe_identity)
        if group is not None:
            by_group.setdefault(group, []).append(search)
    rows = []
    for group, own in sorted(by_group.items()):
        mated = [s for s in own if s.mated]
        hits = sum(1 for s in mated if (rank := s.mate_rank()) is not None and rank <= 1)
        rows.append(
            {
                "group": group,
                "mated_searches": len(mated),
                "non_mated_searches": len(own) - len(mated),
                "rank1": measured_rate(hits, len(mated), min_searches),
                **{name: search_rates(own, value, max_rank, min_searches) for name, value in thresholds.items()},
            }
        )
    return rows

"""``candor model calibrate``: the threshold that meets a target FMR, stored with its evidence."""

from __future__ import annotations

import datetime as dt

from candor_eval.dataset import Dataset
from candor_eval.embedding import Embedded
from candor_eval.evaluate import PairScores, pair_scores
from candor_eval.metrics import fmr_at, fnmr_at, threshold_for_fmr
from candor_kit.model_registry import CalibrationRecord


class CalibrationError(ValueError):
    """The dataset cannot support the requested calibration."""


def calibrate(
    dataset: Dataset,
    embedded: list[Embedded],
    model_id: str,
    model_version: str,
    metric: str,
    target_fmr: float,
    min_group_pairs: int = 20,
    per_group: bool = False,
) -> CalibrationRecord:
    """The largest threshold whose overall FMR meets the target, with per-group rates at it.

    With ``per_group``, the largest threshold at which every group's FMR, over its within-group
    non-mated pairs, meets the target too: the strictest group sets it. Every group must then
    have enough non-mated pairs to measure the target.
    """
    scores = pair_scores(dataset, embedded, metric)
    threshold = threshold_for_fmr(scores.impostor, target_fmr)
    if threshold is None:
        raise CalibrationError(
            f"{scores.impostor.size} non-mated pairs cannot measure an FMR of {target_fmr:g}; "
            f"it takes at least {round(1 / target_fmr)}"
        )
    if per_group:
        threshold = min(threshold, _every_group_threshold(scores, target_fmr))
    groups = scores.group_rates(threshold, min_group_pairs)
    return CalibrationRecord(
        model_id=model_id,
        model_version=model_version,
        metric=metric,
        threshold=round(threshold, 6),
        target_fmr=target_fmr,
        achieved_fmr=fmr_at(scores.impostor, threshold),
        tar_at_threshold=1.0 - fnmr_at(scores.genuine, threshold),
        mated_pairs=int(scores.genuine.size),
        non_mated_pairs=int(scores.impostor.size),
        dataset_root=str(dataset.root),
        dataset_fingerprint=dataset.fingerprint(),
        created_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        per_group=[g.__dict__ for g in groups],
        rule="every-group" if per_group else "overall",
    )


def _every_group_threshold(scores: PairScores, target_fmr: float) -> float:
    """The largest threshold at which each group's FMR meets the target."""
    split = scores.by_group()
    if not split:
        raise CalibrationError("--per-group needs group labels (groups.csv or --groups)")
    thresholds, unmeasurable = [], []
    for group, (_, impostor) in split.items():
        found = threshold_for_fmr(impostor, target_fmr)
        if found is None:
            unmeasurable.append(f"{group} ({impostor.size} non-mated pairs)")
        else:
            thresholds.append(found)
    if unmeasurable:
        raise CalibrationError(
            f"an FMR of {target_fmr:g} takes at least {round(1 / target_fmr)} non-mated pairs in each group; "
            f"too few in: {', '.join(unmeasurable)}"
        )
    return min(thresholds)

"""``candor model calibrate``: the threshold that meets a target FMR, stored with its evidence."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from math import inf

import numpy as np

from candor_eval.dataset import Dataset
from candor_eval.embedding import Embedded
from candor_eval.evaluate import PairScores, identification, identification_summary, identity_groups, pair_scores
from candor_eval.metrics import SearchOutcome, fmr_at, fnmr_at, threshold_for_fmr
from candor_kit.model_registry import FMR_CURVE_POINTS, CalibrationRecord


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
    target_fpir: float = 0.01,
    groups_left_out: list[str] | None = None,
) -> CalibrationRecord:
    """The largest threshold whose overall FMR meets the target, with per-group rates at it.

    With ``per_group``, the largest threshold at which every group's FMR, over its within-group
    non-mated pairs, meets the target, and every group's FPIR, over the non-mated 1:N searches of
    its members, meets ``target_fpir``: the strictest group sets it. Every group must then have
    enough non-mated pairs and searches to measure both. The record carries the 1:N figures at
    the threshold, overall and per group, with their intervals.
    """
    scores = pair_scores(dataset, embedded, metric)
    identities = identity_groups(dataset)
    searches = identification(embedded, metric, identities)
    threshold = threshold_for_fmr(scores.impostor, target_fmr)
    if threshold is None:
        raise CalibrationError(
            f"{scores.impostor.size} non-mated pairs cannot measure an FMR of {target_fmr:g}; "
            f"it takes at least {round(1 / target_fmr)}"
        )
    if per_group:
        threshold = min(
            threshold,
            _every_group_threshold(scores, target_fmr),
            _every_group_fpir_threshold(identities, searches, target_fpir),
        )
    # Rounded down, as written in the record: rounded to nearest, a threshold just under the next
    # non-mated distance could land on or past it and accept one non-mated pair too many.
    threshold = _round_down(threshold)
    groups = scores.group_rates(threshold, min_group_pairs)
    ident = identification_summary(identities, searches, threshold, min_group_pairs)
    figures = {
        "threshold": threshold,
        "mated_searches": ident["mated_searches"],
        "non_mated_searches": ident["non_mated_searches"],
        "rank1": ident["rank1"],
        **ident["at_live_threshold"],
        "per_group": [
            {key: row[key] for key in ("group", "mated_searches", "non_mated_searches", "rank1")}
            | {"fnir": row["at_live_threshold"]["fnir"], "fpir": row["at_live_threshold"]["fpir"]}
            for row in ident["per_group"]
        ],
    }
    return CalibrationRecord(
        model_id=model_id,
        model_version=model_version,
        metric=metric,
        threshold=threshold,
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
        target_fpir=target_fpir if per_group else None,
        identification=figures,
        groups_left_out=sorted(groups_left_out or []),
        fmr_curve=[
            [round(float(distance), 6), fmr_at(scores.impostor, float(distance))]
            for distance in np.linspace(threshold / FMR_CURVE_POINTS, threshold, FMR_CURVE_POINTS)
        ],
    )


def check_groups(dataset: Dataset, target_fmr: float, target_fpir: float) -> None:
    """Before anything is embedded: refuse (CalibrationError, naming each short group) an
    every-group calibration whose groups hold too few within-group non-mated pairs for
    ``target_fmr`` or too few strangers' searches for ``target_fpir``, counted as if every image
    enrols (failures to enrol can only lower the counts)."""
    by_group: dict[str, dict[str, int]] = {}
    for image in dataset.images:
        group = dataset.group_of(image)
        if group is not None:
            people = by_group.setdefault(group, {})
            people[image.identity] = people.get(image.identity, 0) + 1
    if not by_group:
        raise CalibrationError("--per-group needs group labels (groups.csv or --groups)")
    short = []
    for group, people in sorted(by_group.items()):
        images = sum(people.values())
        pairs = images * (images - 1) // 2 - sum(n * (n - 1) // 2 for n in people.values())
        searches = sum(n for n in people.values() if n > 1)  # each person a stranger in one fold
        if pairs < round(1 / target_fmr):
            short.append(f"{group} ({pairs} non-mated pairs; FMR {target_fmr:g} takes {round(1 / target_fmr)})")
        if searches < round(1 / target_fpir):
            short.append(
                f"{group} ({searches} strangers' searches; FPIR {target_fpir:g} takes {round(1 / target_fpir)})"
            )
    if short:
        raise CalibrationError(
            f"too few in: {'; '.join(short)}. Use more people per group, looser targets, or leave a group "
            "out by name with --leave-out-group"
        )


def leave_out_groups(dataset: Dataset, names: list[str]) -> None:
    """Drop the labels of the named groups (CalibrationError naming any group the labels lack)."""
    known = set(dataset.groups.values())
    unknown = sorted(set(names) - known)
    if unknown:
        raise CalibrationError(
            f"no group {', '.join(unknown)} in the labels; the groups are {', '.join(sorted(known))}"
        )
    dataset.groups = {key: group for key, group in dataset.groups.items() if group not in names}


def _every_group_threshold(scores: PairScores, target_fmr: float) -> float:
    """The largest threshold at which each group's FMR meets the target."""
    split = scores.by_group()
    if not split:
        raise CalibrationError("--per-group needs group labels (groups.csv or --groups)")
    impostors = {group: impostor for group, (_, impostor) in split.items()}
    return _strictest(impostors, target_fmr, "FMR", "non-mated pairs", "")


def _every_group_fpir_threshold(
    identities: Mapping[str, str], searches: list[SearchOutcome], target_fpir: float
) -> float:
    """The largest threshold at which the non-mated 1:N searches of each group's members
    (``identities``: identity to group) return a candidate no more often than ``target_fpir``."""
    tops: dict[str, list[float]] = {group: [] for group in identities.values()}
    for search in searches:
        group = identities.get(search.probe_identity)
        if group is not None and not search.mated:
            tops[group].append(search.candidate_distances[0] if search.candidate_distances else inf)
    return _strictest(
        tops, target_fpir, "FPIR", "non-mated searches", " (a larger --target-fpir, or more people per group)"
    )


def _strictest(non_mated: Mapping[str, Sequence[float]], target: float, rate: str, what: str, hint: str) -> float:
    """The smallest of the groups' thresholds that keep the share of their non-mated distances
    at or under it within ``target``; refused naming every group too small to measure it."""
    thresholds, unmeasurable = [], []
    for group in sorted(non_mated):
        found = threshold_for_fmr(non_mated[group], target)
        if found is None:
            unmeasurable.append(f"{group} ({len(non_mated[group])} {what})")
        else:
            thresholds.append(found)
    if unmeasurable:
        raise CalibrationError(
            f"an {rate} of {target:g} takes at least {round(1 / target)} {what} in each group; "
            f"too few in: {', '.join(unmeasurable)}{hint}"
        )
    return min(thresholds)


def _round_down(value: float, places: int = 6) -> float:
    """``value`` to ``places`` decimals, never above it, then the float32 at or under that: the
    one number the record, the gateway's float32 ModelRef and the float32 distances all compare
    against, so a threshold means the same everywhere."""
    scale = 10**places
    rounded = math.floor(value * scale) / scale
    rounded = rounded if rounded <= value else rounded - 1 / scale
    single = np.float32(rounded)
    if float(single) > rounded:
        single = np.nextafter(single, np.float32(-np.inf))
    return float(single)

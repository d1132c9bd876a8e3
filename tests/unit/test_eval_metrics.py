"""Accuracy metrics against hand-computed answers on synthetic distances."""

from __future__ import annotations

import numpy as np
import pytest

from candor_eval.metrics import (
    SearchOutcome,
    clopper_pearson,
    equal_error_rate,
    fmr_at,
    fnir_at,
    fnir_at_fpir,
    fnmr_at,
    fpir_at,
    kfold_accuracy,
    per_group_rates,
    rank_hit_rate,
    tar_at_fmr,
    threshold_for_fmr,
)

GENUINE = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
IMPOSTOR = np.arange(55, 155) / 100  # 100 non-mated distances: 0.55, 0.56, ..., 1.54


def test_fmr_and_fnmr_count_accepts_at_or_under_the_threshold() -> None:
    assert fnmr_at(GENUINE, 0.5) == pytest.approx(0.5)
    assert fmr_at(IMPOSTOR, 0.6) == pytest.approx(0.06)  # 0.55 .. 0.60


def test_threshold_for_fmr_is_the_largest_meeting_the_target() -> None:
    threshold = threshold_for_fmr(IMPOSTOR, 0.01)
    assert threshold is not None and 0.55 <= threshold < 0.56
    assert fmr_at(IMPOSTOR, threshold) == pytest.approx(0.01)
    strict = threshold_for_fmr(IMPOSTOR, 0.001)  # cannot be measured with 100 pairs
    assert strict is None


def test_tar_at_fmr() -> None:
    result = tar_at_fmr(GENUINE, IMPOSTOR, 0.05)
    assert result is not None
    tar, threshold = result
    assert 0.59 <= threshold < 0.60  # five impostors (0.55..0.59) accepted
    assert tar == pytest.approx(0.5)  # 0.1 .. 0.5 accepted


def test_equal_error_rate_where_the_curves_cross() -> None:
    genuine = np.array([0.1, 0.2, 0.3, 0.4, 0.6])
    impostor = np.array([0.5, 0.7, 0.8, 0.9, 1.0])
    eer, threshold = equal_error_rate(genuine, impostor)
    # At 0.5: FMR 1/5, FNMR 1/5.
    assert eer == pytest.approx(0.2)
    assert 0.4 <= threshold <= 0.6


def test_perfectly_separated_scores_have_zero_eer() -> None:
    eer, _ = equal_error_rate([0.1, 0.2], [0.8, 0.9])
    assert eer == pytest.approx(0.0)


def test_kfold_accuracy_picks_each_threshold_on_the_other_folds() -> None:
    distances = np.array([0.1, 0.2, 0.9, 0.8, 0.15, 0.25, 0.85, 0.3])
    mated = np.array([True, True, False, False, True, True, False, False])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    mean, _, per_fold = kfold_accuracy(distances, mated, folds)
    # Fold 1 trains on fold 0: accuracy is best from 0.2 up to 0.8, threshold 0.5; 0.3 (non-mated)
    # is then accepted -> 3/4. Fold 0 trains on fold 1: best at 0.25 up to 0.3, threshold 0.275 -> 4/4.
    assert per_fold == [1.0, 0.75]
    assert mean == pytest.approx(0.875)


SEARCHES = [
    SearchOutcome("a", True, ("a", "b"), (0.2, 0.7)),
    SearchOutcome("b", True, ("c", "b"), (0.4, 0.5)),
    SearchOutcome("c", True, ("d", "e"), (0.3, 0.9)),  # mate not in the gallery list returned
    SearchOutcome("x", False, ("a", "b"), (0.45, 0.8)),
    SearchOutcome("y", False, ("b", "c"), (0.65, 0.9)),
    SearchOutcome("z", False, ("c",), (0.9,)),
    SearchOutcome("w", False, (), ()),
]


def test_rank_hits_count_mated_searches_only() -> None:
    assert rank_hit_rate(SEARCHES, 1) == pytest.approx(1 / 3)
    assert rank_hit_rate(SEARCHES, 2) == pytest.approx(2 / 3)


def test_fpir_and_fnir_follow_the_nist_definitions() -> None:
    assert fpir_at(SEARCHES, 0.5) == pytest.approx(1 / 4)  # x's top candidate at 0.45
    assert fnir_at(SEARCHES, 0.5, max_rank=2) == pytest.approx(1 / 3)  # only c is missed
    assert fnir_at(SEARCHES, 0.3, max_rank=2) == pytest.approx(2 / 3)  # b's mate at 0.5 > 0.3
    assert fnir_at(SEARCHES, 1.0, max_rank=1) == pytest.approx(2 / 3)  # investigation-mode rank-1 misses


def test_fnir_at_fpir_uses_the_non_mated_top_distances() -> None:
    result = fnir_at_fpir(SEARCHES, 0.25, max_rank=2)
    assert result is not None
    fnir, threshold = result
    assert 0.45 <= threshold < 0.65  # one of four non-mated searches may hit
    assert fnir == pytest.approx(1 / 3)
    assert fnir_at_fpir(SEARCHES, 0.01, max_rank=2) is None  # needs 100 non-mated searches


def test_per_group_rates_use_one_threshold_and_compare_to_the_lowest_fmr() -> None:
    rates = per_group_rates(
        {"g1": [0.1] * 30, "g2": [0.1] * 25 + [0.9] * 5, "g3": [0.1] * 3},
        {"g1": [0.5] * 2 + [0.9] * 38, "g2": [0.5] * 8 + [0.9] * 32, "g3": [0.9] * 5},
        threshold=0.6,
    )
    by_group = {rate.group: rate for rate in rates}
    assert by_group["g1"].fmr == pytest.approx(0.05) and by_group["g1"].fnmr == pytest.approx(0.0)
    assert by_group["g2"].fmr == pytest.approx(0.2) and by_group["g2"].fnmr == pytest.approx(5 / 30)
    assert by_group["g2"].fmr_ratio_to_lowest == pytest.approx(4.0)
    assert by_group["g1"].fmr_ratio_to_lowest == pytest.approx(1.0)
    assert by_group["g3"].fmr is None and by_group["g3"].fnmr is None  # too few pairs for a figure


def test_group_rates_carry_exact_binomial_intervals() -> None:
    rates = {r.group: r for r in per_group_rates({"g": [0.1] * 100}, {"g": [0.5] * 5 + [0.9] * 95}, threshold=0.6)}
    low, high = rates["g"].fmr_ci  # type: ignore[misc]
    assert low < rates["g"].fmr < high  # type: ignore[operator]
    assert (low, high) == pytest.approx((0.01643, 0.11284), abs=1e-4)  # Clopper-Pearson 5 of 100
    assert rates["g"].fnmr_ci == pytest.approx((0.0, 0.03622), abs=1e-4)


def test_no_errors_in_n_trials_still_bounds_the_rate_above() -> None:
    """The rule of three: no false match in 3,000 pairs is an FMR under about 1 in 1,000."""
    low, high = clopper_pearson(0, 3000)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 3000)) and 0.001 < high < 0.00125
    assert clopper_pearson(3000, 3000)[1] == 1.0

"""Rates with their uncertainty: the exact binomial interval every measured rate is shown with
(evaluation, calibration, the oversight report's reviewer proficiency and agreement)."""

from __future__ import annotations

from scipy.stats import beta

#: The confidence of every interval shown.
CONFIDENCE = 0.95


def clopper_pearson(errors: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper-Pearson) binomial interval for a rate of ``errors`` in ``trials``.

    With no errors in n trials the upper end is about 3/n at 95 % (the rule of three). Pairs
    that share an image are not independent, so the interval is a lower bound on the uncertainty.
    """
    if trials <= 0:
        return (0.0, 1.0)
    tail = (1.0 - confidence) / 2
    low = 0.0 if errors == 0 else float(beta.ppf(tail, errors, trials - errors + 1))
    high = 1.0 if errors == trials else float(beta.ppf(1 - tail, errors + 1, trials - errors))
    return (low, high)

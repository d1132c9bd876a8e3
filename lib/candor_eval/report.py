"""Writing an evaluation: metrics.json, report.md and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display here or in a service
import matplotlib.pyplot as plt
import numpy as np


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a (too few pairs)"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


#: A curve is drawn through at most this many of its points (millions of pairs give millions).
PLOTTED_POINTS = 4000


def _thinned(values: np.ndarray) -> np.ndarray:
    """Evenly spaced points of a curve, its first and last kept."""
    if values.size <= PLOTTED_POINTS:
        return values
    return values[np.linspace(0, values.size - 1, PLOTTED_POINTS).round().astype(int)]


def _interval(value: Any, interval: Any) -> str:
    """A rate with its 95 % interval."""
    if value is None or interval is None:
        return _fmt(value)
    return f"{_fmt(value)} [{interval[0]:.4f}, {interval[1]:.4f}]"


def _fairness_first(runs: dict[str, dict[str, Any]]) -> list[str]:
    """The report's first table: each group's FMR and FNMR with intervals and the worst-to-best
    FMR ratio, at the threshold named with the rule that set it, and plainly whether the pairs
    can show a difference between the groups at all."""
    lines = []
    for name, metrics in runs.items():
        groups = metrics["per_group"]["groups"]
        if not groups:
            continue
        threshold = metrics["per_group"]["threshold"]
        rule = metrics.get("threshold_rule", "the operating threshold")
        lines += [
            f"## Per group first: {name} at {threshold:.3f} ({rule})",
            "",
            "| group | FMR [95 % CI] | FNMR [95 % CI] | FMR ÷ lowest |",
            "|---|---|---|---|",
        ]
        measured = [g for g in groups if g["fmr"] is not None]
        all_zero = bool(measured) and all(g["fmr"] == 0 for g in measured)
        for g in groups:
            ratio = "all zero" if all_zero and g["fmr"] is not None else _fmt(g["fmr_ratio_to_lowest"], 2)
            fmr, fnmr = _interval(g["fmr"], g["fmr_ci"]), _interval(g["fnmr"], g["fnmr_ci"])
            lines.append(f"| {g['group']} | {fmr} | {fnmr} | {ratio} |")
        ratios = [g["fmr_ratio_to_lowest"] for g in measured if g["fmr_ratio_to_lowest"] is not None]
        if ratios:
            lines.append(f"\nWorst-to-best FMR ratio: {max(ratios):.2f}.")
        lines += ["", _difference_shown(measured), ""]
    return lines


def _difference_shown(groups: list[dict[str, Any]]) -> str:
    """Whether the groups' FMR intervals are apart: if every pair overlaps, the pairs are too few
    to show a difference, whatever the figures look like."""
    if len(groups) < 2:
        return "Fewer than two groups have enough non-mated pairs to compare."
    apart = [
        (a["group"], b["group"])
        for index, a in enumerate(groups)
        for b in groups[index + 1 :]
        if a["fmr_ci"][1] < b["fmr_ci"][0] or b["fmr_ci"][1] < a["fmr_ci"][0]
    ]
    if not apart:
        return "Every group's FMR interval overlaps every other's: these pairs are too few to show a difference."
    return "FMR intervals apart (a real difference at 95 %): " + ", ".join(f"{a} and {b}" for a, b in apart) + "."


def _far_from_balance(v: dict[str, Any]) -> list[str]:
    """A warning when the operating threshold sits far from this data's equal-error point: one
    error rate there is more than twice the EER and a point above it (a pack's nominal threshold
    made for other photos, say)."""
    op, eer = v["at_operating_threshold"], v["eer"]
    if math.isnan(eer) or max(op["fmr"], op["fnmr"]) <= 2 * eer + 0.01:
        return []
    return [
        "",
        f"**The operating threshold is far from this data's balance point** (EER {eer:.4f} at distance "
        f"{v['eer_threshold']:.3f}): calibrate the model on photos like these before using it "
        "(`candor model calibrate`).",
    ]


def _search_rate(measured: dict[str, Any] | None) -> str:
    """A 1:N rate with its interval and counts, or why there is none."""
    if measured is None:
        return "n/a (too few searches)"
    low, high = measured["ci"]
    return f"{measured['rate']:.4f} [{low:.4f}, {high:.4f}] ({measured['count']}/{measured['trials']})"


def _group_searches(rows: list[dict[str, Any]]) -> list[str]:
    """The per-group 1:N table: each group's rank-1, and FNIR and FPIR at the shared thresholds."""
    if not rows:
        return []
    fixed = sorted({key for row in rows for key in row if key.startswith("at_fpir_")})
    headings = [f"FNIR / FPIR at FPIR {key.removeprefix('at_fpir_')} overall" for key in fixed]
    lines = [
        "",
        "#### 1:N per group (probes grouped by their identity's group; every group at the same thresholds)",
        "",
        f"| group | mated / non-mated searches | rank-1 | {' | '.join(headings)} | FNIR / FPIR at the live threshold |",
        "|---|---|---|" + "---|" * (len(fixed) + 1),
    ]
    for row in rows:
        cells = [
            f"{_search_rate(row[key]['fnir'])} / {_search_rate(row[key]['fpir'])}" if key in row else "n/a"
            for key in [*fixed, "at_live_threshold"]
        ]
        lines.append(
            f"| {row['group']} | {row['mated_searches']} / {row['non_mated_searches']} | "
            f"{_search_rate(row['rank1'])} | {' | '.join(cells)} |"
        )
    return lines


def _plot_curves(curves: dict[str, Any], path: Path, title: str, roc: bool) -> None:
    """DET (FNMR against FMR, both log) or ROC (TAR against log FMR), overall and per group."""
    figure, axes = plt.subplots(figsize=(6, 5))
    for label, curve in [("overall", curves["overall"]), *curves["groups"].items()]:
        fmr, fnmr = _thinned(curve.fmr), _thinned(curve.fnmr)
        y = 1 - fnmr if roc else np.clip(fnmr, 1e-6, 1)
        axes.plot(np.clip(fmr, 1e-6, 1), y, label=label, linewidth=2 if label == "overall" else 1)
    axes.set_xscale("log")
    if not roc:
        axes.set_yscale("log")
    axes.set_xlabel("false match rate (FMR)")
    axes.set_ylabel("true accept rate (TAR)" if roc else "false non-match rate (FNMR)")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_det(curves: dict[str, Any], path: Path, title: str) -> None:
    """DET curves: FNMR against FMR on log axes, overall and per group."""
    _plot_curves(curves, path, title, roc=False)


def plot_roc(curves: dict[str, Any], path: Path, title: str) -> None:
    """ROC curves: true-accept rate against FMR (log axis), overall and per group."""
    _plot_curves(curves, path, title, roc=True)


def plot_histogram(curves: dict[str, Any], threshold: float, path: Path, title: str) -> None:
    """Distance histograms of mated and non-mated pairs, with the operating threshold."""
    figure, axes = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, max(1.2, float(np.max(curves["impostor"], initial=1.0))), 60)
    axes.hist(curves["genuine"], bins=bins, alpha=0.6, density=True, label="mated")
    axes.hist(curves["impostor"], bins=bins, alpha=0.6, density=True, label="non-mated")
    axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    axes.set_xlabel("distance")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(out: Path, runs: dict[str, dict[str, Any]], curves_by_run: dict[str, dict[str, Any]]) -> Path:
    """Write metrics.json, the plots and report.md for one or more pipelines; returns report.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(runs, indent=2, sort_keys=True, default=float))
    lines = ["# Face recognition evaluation", "", *_fairness_first(runs)]
    for name, metrics in runs.items():
        threshold = metrics["per_group"]["threshold"]
        plot_det(curves_by_run[name], out / f"det-{name}.png", f"DET ({name})")
        plot_roc(curves_by_run[name], out / f"roc-{name}.png", f"ROC ({name})")
        plot_histogram(curves_by_run[name], threshold, out / f"hist-{name}.png", f"distances ({name})")
        v, i, f = metrics["verification"], metrics["identification"], metrics["failure_to_enrol"]
        lines += [
            f"## {name}",
            "",
            f"{metrics['dataset']['images']} images of {metrics['dataset']['identities']} identities; "
            f"failure to enrol: {f['count']} ({_fmt(f['rate'], 3)}) {f['reasons'] or ''}",
            "",
            f"Face measured in a photo with several: the {metrics.get('face_rule', 'centre')} one "
            f"({'nearest the photo centre' if metrics.get('face_rule', 'centre') == 'centre' else 'widest'}); "
            f"{metrics.get('images_with_several_faces', 0)} photos held several faces.",
            "",
            "### Verification (1:1)",
            "",
            f"{v['mated_pairs']} mated and {v['non_mated_pairs']} non-mated pairs. "
            f"EER {_fmt(v['eer'])} at distance {_fmt(v['eer_threshold'], 3)}.",
            "",
            "| FMR | TAR | threshold |",
            "|---|---|---|",
        ]
        for target, result in v["tar_at_fmr"].items():
            lines.append(f"| {target} | {_fmt(result and result['tar'])} | {_fmt(result and result['threshold'], 3)} |")
        op = v["at_operating_threshold"]
        lines += [
            "",
            f"At the operating threshold {op['threshold']:.3f}: FMR {_fmt(op['fmr'])}, FNMR {_fmt(op['fnmr'])}.",
            *_far_from_balance(v),
        ]
        if "kfold_accuracy" in v:
            k = v["kfold_accuracy"]
            lines.append(f"{len(k['per_fold'])}-fold accuracy {k['mean']:.4f} ± {k['std']:.4f}.")
        lines += [
            "",
            "### Identification (1:N)",
            "",
            f"{i['mated_searches']} mated and {i['non_mated_searches']} non-mated searches; rank-1 "
            f"{_fmt(i['rank1'])}, rank-10 {_fmt(i['rank10'])}; investigation mode (no threshold) "
            f"rank-1 miss rate {_fmt(i['investigation_rank1_miss_rate'])}.",
            "",
            "| FPIR | FNIR | threshold |",
            "|---|---|---|",
        ]
        for target, result in i["fnir_at_fpir"].items():
            lines.append(
                f"| {target} | {_fmt(result and result['fnir'])} | {_fmt(result and result['threshold'], 3)} |"
            )
        live = i["at_live_threshold"]
        lines += [
            "",
            f"At the live threshold {threshold:.3f}: FNIR {_search_rate(live['fnir'])}, "
            f"FPIR {_search_rate(live['fpir'])}.",
        ]
        lines += _group_searches(i["per_group"])
        groups = metrics["per_group"]["groups"]
        if groups:
            lines += [
                "",
                f"### Per group at threshold {threshold:.3f} (one threshold for everyone)",
                "",
                "Non-mated pairs are every pair of different people within the group; each rate has its exact "
                "95 % binomial interval (pairs that share an image are not independent, so it is a lower bound "
                "on the uncertainty).",
                "",
                "| group | mated pairs | non-mated pairs | FMR [95 % CI] | FNMR [95 % CI] | FMR ÷ lowest FMR |",
                "|---|---|---|---|---|---|",
            ]
            all_zero = all(g["fmr"] == 0 for g in groups)  # every FMR measured, and every one zero
            for g in groups:
                ratio = "all zero" if all_zero else _fmt(g["fmr_ratio_to_lowest"], 2)
                lines.append(
                    f"| {g['group']} | {g['mated_pairs']} | {g['non_mated_pairs']} | "
                    f"{_interval(g['fmr'], g['fmr_ci'])} | {_interval(g['fnmr'], g['fnmr_ci'])} | {ratio} |"
                )
        lines += ["", f"![DET](det-{name}.png) ![ROC](roc-{name}.png) ![distances](hist-{name}.png)", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report

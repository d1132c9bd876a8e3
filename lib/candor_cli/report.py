"""``candor report``: the oversight report of a period, computed from the audit log alone.

It counts searches by purpose and by outcome (candidates returned, none, refused), reviews
(confirmed, rejected, disputed), refusals by rule, the busiest users, deletions, and the models
and calibrations searches ran under, each calibration with its per-group error rates (from its
``model.calibrated`` record), and writes them as Markdown or HTML with PNG charts. Nothing but
the audit records feeds it, so anyone who can verify the chain can recompute every number.
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markdown import markdown as render_markdown

from candor.audit.v1 import audit_pb2
from candor_audit.export import record_details

#: Review outcomes as the review workflow records them (review.confirmed, review.rejected, ...).
REVIEW_OUTCOMES = ("confirmed", "rejected", "disputed")
DELETIONS = ("subject.deleted", "record.deleted")


@dataclass
class OversightReport:
    """The numbers of one period."""

    period: tuple[str, str]
    records: int = 0
    searches_by_purpose: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    reviews: Counter[str] = field(default_factory=Counter)
    refusals_by_rule: Counter[str] = field(default_factory=Counter)
    searches_by_user: Counter[str] = field(default_factory=Counter)
    deletions: list[dict[str, Any]] = field(default_factory=list)
    #: Searches by the model and calibration they ran under: (model, metric, threshold, calibration id).
    models: Counter[tuple[str, str, float, str]] = field(default_factory=Counter)
    #: The ``model.calibrated`` records of the calibrations searches used, by calibration id.
    calibrations: dict[str, dict[str, Any]] = field(default_factory=dict)


def compute(
    records: list[audit_pb2.AuditRecord],
    period: tuple[str, str],
    calibrations: list[audit_pb2.AuditRecord] = (),  # type: ignore[assignment]
) -> OversightReport:
    """The report's numbers from the period's audit records, and the evidence of each calibration
    its searches ran under from ``calibrations`` (``model.calibrated`` records up to the period's end)."""
    report = OversightReport(period=period, records=len(records))
    calibrated = {record_details(r).get("calibration_id"): record_details(r) for r in calibrations}
    for record in records:
        event, details = record.event, record_details(record)
        if event.kind == "search.completed":
            report.searches_by_purpose[event.purpose or "(none)"] += 1
            report.searches_by_user[event.actor] += 1
            report.outcomes["candidates returned" if details.get("candidates") else "no candidate"] += 1
            model = details.get("model") or {}
            calibration = details.get("calibration_id") or ""
            name = f"{model.get('id', '?')} {model.get('version', '')}".strip()
            report.models[(name, model.get("metric", ""), float(details.get("threshold") or 0), calibration)] += 1
            if calibration in calibrated:
                report.calibrations[calibration] = calibrated[calibration]
        elif event.kind == "search.refused":
            report.outcomes["refused"] += 1
            report.searches_by_user[event.actor] += 1
        if event.kind.endswith(".refused"):
            action = event.kind.removesuffix(".refused")
            # A policy refusal names its rule; any other refusal is counted by its status and reason.
            rule = details.get("rule") or f"{details.get('code', '?')}: {details.get('reason', '?')}"
            report.refusals_by_rule[f"{action}: {rule}"] += 1
        if event.kind.startswith("review.") and event.kind.removeprefix("review.") in REVIEW_OUTCOMES:
            report.reviews[event.kind.removeprefix("review.")] += 1
        if event.kind in DELETIONS:
            report.deletions.append(
                {
                    "when": event.occurred_at.ToJsonString(),
                    "by": event.actor,
                    "what": f"record {details['record_id']}"
                    if details.get("record_id")
                    else details.get("subject_id", ""),
                    "reason": details.get("reason", ""),
                }
            )
    for outcome in ("candidates returned", "no candidate", "refused"):
        report.outcomes.setdefault(outcome, 0)
    for outcome in REVIEW_OUTCOMES:
        report.reviews.setdefault(outcome, 0)
    return report


def _chart(counts: Counter[str], title: str, path: Path, top: int = 12) -> Path:
    items = counts.most_common(top)
    # Loaded when a chart is drawn, not when the report's numbers are computed (the review desk).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 0.45 * max(len(items), 2) + 1.2))
    labels = [label if len(label) <= 60 else label[:57] + "..." for label, _ in items]
    axes.barh(labels[::-1], [count for _, count in items][::-1], color="#4a6fa5")
    axes.set_title(title)
    axes.set_xlabel("count")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def charts(report: OversightReport, folder: Path) -> dict[str, Path]:
    """PNG charts of the report, by section."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "purpose": _chart(report.searches_by_purpose, "Searches by purpose", folder / "searches-by-purpose.png"),
        "outcome": _chart(report.outcomes, "Searches by outcome", folder / "searches-by-outcome.png"),
        "reviews": _chart(report.reviews, "Reviews", folder / "reviews.png"),
        "refusals": _chart(report.refusals_by_rule, "Refusals by rule", folder / "refusals-by-rule.png"),
        "users": _chart(report.searches_by_user, "Busiest users (searches)", folder / "busiest-users.png", top=10),
    }


def _table(counts: Counter[str], heading: str, limit: int | None = None) -> list[str]:
    rows = counts.most_common(limit)
    return [f"| {heading} | count |", "|---|---|", *(f"| {name} | {count} |" for name, count in rows)] or []


def markdown(report: OversightReport, images: dict[str, Path]) -> str:
    """The report as Markdown, with the charts beside it."""
    start, end = report.period
    lines = [
        f"# Candor oversight report, {start} to {end}",
        "",
        f"Computed from {report.records} audit records of the period, and nothing else.",
        "",
        "## Searches by purpose",
        "",
        *_table(report.searches_by_purpose, "purpose"),
        "",
        f"![searches by purpose]({images['purpose'].name})",
        "",
        "## Searches by outcome",
        "",
        *_table(report.outcomes, "outcome"),
        "",
        f"![searches by outcome]({images['outcome'].name})",
        "",
        "## Reviews",
        "",
        *_table(report.reviews, "outcome"),
        "",
        f"![reviews]({images['reviews'].name})",
        "",
        "## Refusals by rule",
        "",
        *(
            _table(report.refusals_by_rule, "action: rule (or status: reason)")
            if report.refusals_by_rule
            else ["None."]
        ),
        "",
        f"![refusals by rule]({images['refusals'].name})",
        "",
        "## Busiest users",
        "",
        *_table(report.searches_by_user, "user", limit=10),
        "",
        f"![busiest users]({images['users'].name})",
        "",
        "## Deletions",
        "",
    ]
    if report.deletions:
        lines += ["| when | by | what | reason |", "|---|---|---|---|"]
        lines += [f"| {d['when']} | {d['by']} | {d['what']} | {d['reason']} |" for d in report.deletions]
    else:
        lines.append("None.")
    lines += ["", *_models_section(report)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class CalibrationView:
    """One calibration searches ran under, ready to show: a title, a summary line, and per group
    the cells FMR, FNMR, rank-1, FNIR and FPIR (each with its interval, or why there is none)."""

    title: str
    summary: str
    rows: list[tuple[str, str, str, str, str, str]]


def models_view(report: OversightReport) -> tuple[list[tuple[str, str, str, str, int]], list[CalibrationView]]:
    """The models and calibrations searches ran under, as the Markdown report and the review desk
    show them: (model, metric, threshold, calibration, searches) rows, and each calibration."""
    models = [
        (name, metric, f"{threshold:.4f}", calibration[:12] or "UNCALIBRATED (the model's nominal threshold)", count)
        for (name, metric, threshold, calibration), count in sorted(report.models.items())
    ]
    views = []
    for calibration, details in sorted(report.calibrations.items()):
        summary = (
            f"Threshold {float(details.get('threshold', 0)):.4f} ({details.get('metric', '')} distance), rule "
            f"{details.get('rule', 'overall')}: FMR at most {details.get('target_fmr')}"
            + (f", FPIR at most {details['target_fpir']}" if details.get("target_fpir") else "")
            + f"; dataset {str(details.get('dataset_fingerprint', ''))[:12]}"
            + (f", calibrated {details['created_at']}" if details.get("created_at") else "")
            + "."
        )
        ident = {row.get("group"): row for row in (details.get("identification") or {}).get("per_group", [])}
        groups = {row.get("group"): row for row in details.get("per_group") or []}
        rows = []
        for group in sorted(set(groups) | set(ident), key=str):
            pair, search = groups.get(group, {}), ident.get(group, {})
            rows.append(
                (
                    str(group),
                    _interval(pair.get("fmr"), pair.get("fmr_ci")),
                    _interval(pair.get("fnmr"), pair.get("fnmr_ci")),
                    _measured(search.get("rank1")),
                    _measured(search.get("fnir")),
                    _measured(search.get("fpir")),
                )
            )
        title = f"Calibration {calibration[:12]}: {details.get('model')} {details.get('version')}"
        views.append(CalibrationView(title, summary, rows))
    return models, views


def _models_section(report: OversightReport) -> list[str]:
    """The models and calibrations searches ran under, each calibration with its measured error
    rates per group, verification (FMR, FNMR) and 1:N (rank-1, FNIR, FPIR) at its threshold."""
    lines = ["## Models and calibrations in force", ""]
    if not report.models:
        return [*lines, "No search in this period."]
    models, views = models_view(report)
    lines += ["| model | distance | threshold | calibration | searches |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(str(cell) for cell in row)} |" for row in models]
    for view in views:
        lines += ["", f"### {view.title}", "", view.summary, ""]
        if not view.rows:
            lines.append("The calibration record carries no per-group figures.")
            continue
        lines += [
            "| group | FMR [95 % CI] | FNMR [95 % CI] | rank-1 | FNIR (1:N) | FPIR (1:N) |",
            "|---|---|---|---|---|---|",
        ]
        lines += [f"| {' | '.join(row)} |" for row in view.rows]
    return lines


def _interval(value: Any, interval: Any) -> str:
    """A rate with its 95 % interval, or why there is none."""
    if value is None or not interval:
        return "n/a (too few pairs)"
    return f"{float(value):.4g} [{float(interval[0]):.4g}, {float(interval[1]):.4g}]"


def _measured(measured: Any) -> str:
    """A 1:N rate with its interval and counts, or why there is none."""
    if not measured:
        return "n/a (too few searches)"
    low, high = measured["ci"]
    counts = f"({measured['count']}/{measured['trials']})"
    return f"{float(measured['rate']):.4g} [{float(low):.4g}, {float(high):.4g}] {counts}"


def to_html(markdown_text: str, images: dict[str, Path]) -> str:
    """A self-contained HTML page of the Markdown report, its charts embedded as data URIs."""
    for path in images.values():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        markdown_text = markdown_text.replace(f"({path.name})", f"(data:image/png;base64,{data})")
    body = render_markdown(markdown_text, extensions=["tables"])
    style = "body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{border:1px solid #999;padding:.2em .6em}"
    head = f"<!doctype html><html lang='en'><head><meta charset='utf-8'><style>{style}</style></head>"
    return f"{head}<body>{body}</body></html>\n"

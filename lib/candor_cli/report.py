"""``candor report``: the oversight report of a period, computed from the audit log alone.

It counts searches by purpose and by outcome (candidates returned, none, refused), each reviewed
candidate once by its latest outcome (confirmed, rejected, disputed), policy refusals by rule apart
from interface errors (a malformed call, a missing search), the busiest users, deletions, and the
models and calibrations searches ran under, each calibration with its per-group error rates (from
its ``model.calibrated`` record), and writes them as Markdown, HTML with PNG charts, CSV or PDF.
Nothing but the audit records feeds it, so anyone who can verify the chain can recompute every
number. Every time it shows is UTC, in one format (:func:`utc`).
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from markdown import markdown as render_markdown

from candor.audit.v1 import audit_pb2
from candor_cli.reviewing import Rate, ReviewerScore, agreement, proficiency
from candor_kit.audit_events import record_details

#: Review outcomes as the review workflow records them (review.confirmed, review.rejected, ...).
REVIEW_OUTCOMES = ("confirmed", "rejected", "disputed")
#: What the review outcomes count, said beside them.
REVIEWS_NOTE = (
    "Each reviewed candidate once, by its latest outcome; {settled} of them were disputes a supervisor settled."
)
DELETIONS = ("subject.deleted", "record.deleted")
CALIBRATED = "model.calibrated"
#: A gateway's record of a calibration it runs searches under, for one no operator recorded.
CALIBRATION_IN_USE = "calibration.in_use"
SEEDED = "proficiency.seeded"
#: The kinds compute() takes as evidence from the chain's start, whatever the period.
#: The gateway's record of a service account's first call of a day: which actors are machines.
SERVICE_ACCOUNT_USED = "service_account.used"
EVIDENCE_KINDS = (CALIBRATED, CALIBRATION_IN_USE, SEEDED, SERVICE_ACCOUNT_USED)


@dataclass
class OversightReport:
    """The numbers of one period."""

    period: tuple[str, str]
    records: int = 0
    searches_by_purpose: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    #: Reviewed candidates by their latest outcome: each candidate counted once.
    reviews: Counter[str] = field(default_factory=Counter)
    #: Of those, the disputes a supervisor settled (counted under the settled outcome).
    settled_disputes: int = 0
    #: Calls refused by a policy rule (purpose, role, own search, ...), as "action: rule".
    refusals_by_rule: Counter[str] = field(default_factory=Counter)
    #: Calls refused as malformed or naming what does not exist, as "action: STATUS: reason".
    errors: Counter[str] = field(default_factory=Counter)
    searches_by_user: Counter[str] = field(default_factory=Counter)
    #: What each service account did, by "<account> (<role>): <record kind>".
    service_account_calls: Counter[str] = field(default_factory=Counter)
    deletions: list[dict[str, Any]] = field(default_factory=list)
    #: Searches by the model and calibration they ran under: (model, metric, threshold, calibration id).
    models: Counter[tuple[str, str, float, str]] = field(default_factory=Counter)
    #: The ``model.calibrated`` records of the calibrations searches used, by calibration id.
    calibrations: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Each reviewer's score on the period's known-answer tests (supervisors' proficiency tests).
    proficiency: list[ReviewerScore] = field(default_factory=list)
    #: How often two reviewers of one real candidate reach the same kind of conclusion: overall,
    #: and per reviewer.
    agreement: Rate = field(default_factory=lambda: Rate(0, 0))
    agreement_by_reviewer: dict[str, Rate] = field(default_factory=dict)


def _deleted(details: dict[str, Any]) -> str:
    """What a deletion record expunged, and any photos it had to keep (unreadable, unplaced)."""
    what = f"record {details['record_id']}" if details.get("record_id") else str(details.get("subject_id", ""))
    kept = details.get("photos_unreadable")
    if isinstance(kept, int) and kept > 0:
        what += f" ({kept} unreadable photo{'s' if kept > 1 else ''} kept)"
    return what


def compute(
    records: list[audit_pb2.AuditRecord],
    period: tuple[str, str],
    evidence: list[audit_pb2.AuditRecord] = (),  # type: ignore[assignment]
) -> OversightReport:
    """The report's numbers from the period's audit records, with ``evidence`` from the chain's
    start to the period's end (EVIDENCE_KINDS): each calibration the period's searches ran under,
    and the known answers of the proficiency tests its reviews scored."""
    report = OversightReport(period=period, records=len(records))
    # An operator's record of a calibration is the one shown; a gateway's, only where there is none.
    calibrated = {
        record_details(r).get("calibration_id"): {**record_details(r), "recorded_by_gateway": True}
        for r in evidence
        if r.event.kind == CALIBRATION_IN_USE
    }
    calibrated.update(
        (record_details(r).get("calibration_id"), record_details(r)) for r in evidence if r.event.kind == CALIBRATED
    )
    answers = {r.event.event_id: str(record_details(r).get("answer")) for r in evidence if r.event.kind == SEEDED}
    accounts = {
        r.event.actor: str(record_details(r).get("role", "?")) for r in evidence if r.event.kind == SERVICE_ACCOUNT_USED
    }
    report.proficiency = proficiency(records, answers)
    report.agreement, report.agreement_by_reviewer = agreement(records, answers)
    #: The latest outcome of each reviewed candidate, by (search, rank); whether it was disputed.
    latest: dict[tuple[str, int], str] = {}
    disputed: set[tuple[str, int]] = set()
    for record in records:
        event, details = record.event, record_details(record)
        # The matcher's records repeat the gateway's (the same search, made for the same caller).
        if event.actor in accounts and event.kind != SERVICE_ACCOUNT_USED and not event.kind.startswith("matcher."):
            report.service_account_calls[f"{event.actor} ({accounts[event.actor]}): {event.kind}"] += 1
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
            # A policy refusal names its rule; any other refusal is an interface error, counted by
            # its status and reason.
            if details.get("rule"):
                report.refusals_by_rule[f"{action}: {details['rule']}"] += 1
            else:
                report.errors[f"{action}: {details.get('code', '?')}: {details.get('reason', '?')}"] += 1
        if event.kind.startswith("review.") and event.kind.removeprefix("review.") in REVIEW_OUTCOMES:
            candidate = (str(details.get("search_id", event.event_id)), int(details.get("rank", 0)))
            latest[candidate] = event.kind.removeprefix("review.")
            if latest[candidate] == "disputed":
                disputed.add(candidate)
        if event.kind in DELETIONS:
            report.deletions.append(
                {
                    "when": utc(event.occurred_at),
                    "by": event.actor,
                    "what": _deleted(details),
                    "reason": details.get("reason", ""),
                }
            )
    report.reviews.update(latest.values())
    report.settled_disputes = sum(1 for candidate in disputed if latest[candidate] != "disputed")
    for outcome in ("candidates returned", "no candidate", "refused"):
        report.outcomes.setdefault(outcome, 0)
    for outcome in REVIEW_OUTCOMES:
        report.reviews.setdefault(outcome, 0)
    return report


def utc(stamp: Timestamp) -> str:
    """A timestamp as the one format every report and page shows: ``2026-11-28 10:00:06 UTC``."""
    if not stamp.seconds and not stamp.nanos:
        return ""
    return stamp.ToDatetime(tzinfo=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


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
        "refusals": _chart(report.refusals_by_rule, "Policy refusals by rule", folder / "refusals-by-rule.png"),
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
        REVIEWS_NOTE.format(settled=report.settled_disputes),
        "",
        *_table(report.reviews, "outcome"),
        "",
        f"![reviews]({images['reviews'].name})",
        "",
        "## Policy refusals",
        "",
        "Calls the policy refused, by the rule that refused them.",
        "",
        *(_table(report.refusals_by_rule, "action: rule") if report.refusals_by_rule else ["None."]),
        "",
        f"![refusals by rule]({images['refusals'].name})",
        "",
        "## Interface errors",
        "",
        "Calls refused as malformed or naming what does not exist: no policy was at stake.",
        "",
        *(_table(report.errors, "action: status: reason") if report.errors else ["None."]),
        "",
        "## Busiest users",
        "",
        *_table(report.searches_by_user, "user", limit=10),
        "",
        f"![busiest users]({images['users'].name})",
        "",
        "## Calls by service account",
        "",
        "What each integration's machine identity did, by the kind of record it left in the chain.",
        "",
        *(
            _table(report.service_account_calls, "account (role): record")
            if report.service_account_calls
            else ["None."]
        ),
        "",
        "## Deletions",
        "",
    ]
    if report.deletions:
        lines += ["| when | by | what | reason |", "|---|---|---|---|"]
        lines += [f"| {d['when']} | {d['by']} | {d['what']} | {d['reason']} |" for d in report.deletions]
    else:
        lines.append("None.")
    lines += ["", *_reviewing_section(report), "", *_models_section(report)]
    return "\n".join(lines) + "\n"


#: The proficiency table's header, as every rendering shows it.
PROFICIENCY_HEADER = ("Reviewer", "Tests", "Accuracy [95 % CI]", "False same", "False different", "Inconclusive")
PROFICIENCY_NOTE = (
    "Known-answer tests supervisors seeded into reviewers' queues (never leads). A false same is a "
    "same-person conclusion on two different people: the error that makes a false lead."
)
AGREEMENT_NOTE = (
    "On real candidates, how often two reviewers reached the same kind of conclusion (same, different, or neither)."
)


def proficiency_rows(report: OversightReport) -> list[tuple[str, ...]]:
    """The proficiency table: one row per reviewer tested in the period."""
    return [
        (s.reviewer, str(s.tests), str(s.accuracy), str(s.false_same), str(s.false_different), str(s.neither))
        for s in report.proficiency
    ]


def agreement_rows(report: OversightReport) -> list[tuple[str, str]]:
    """The agreement table: all pairs, then each reviewer's pairs."""
    return [("all reviewers", str(report.agreement))] + [
        (name, str(rate)) for name, rate in report.agreement_by_reviewer.items()
    ]


def _reviewing_section(report: OversightReport) -> list[str]:
    lines = ["## Reviewer proficiency", "", PROFICIENCY_NOTE, ""]
    rows = proficiency_rows(report)
    if rows:
        lines += [f"| {' | '.join(PROFICIENCY_HEADER)} |", "|---|---|---|---|---|---|"]
        lines += [f"| {' | '.join(row)} |" for row in rows]
    else:
        lines.append("No known-answer test was reviewed in this period.")
    lines += ["", "## Agreement between reviewers", "", AGREEMENT_NOTE, "", "| reviewers | agreement [95 % CI] |"]
    lines += ["|---|---|", *(f"| {name} | {rate} |" for name, rate in agreement_rows(report))]
    return lines


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
            + (
                " No operator recorded it; recorded by the gateway that used it, from its registry."
                if details.get("recorded_by_gateway")
                else ""
            )
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


#: The report's counted sections as CSV and PDF show them: (title, the counter's attribute).
SECTIONS = (
    ("searches by outcome", "outcomes"),
    ("searches by purpose", "searches_by_purpose"),
    ("review outcomes", "reviews"),
    ("policy refusals", "refusals_by_rule"),
    ("interface errors", "errors"),
    ("searches by user", "searches_by_user"),
    ("calls by service account", "service_account_calls"),
)
#: A spreadsheet runs a cell starting with one of these as a formula: such cells get a quote first.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def to_csv(report: OversightReport) -> str:
    """The report as one CSV table: section, name, count, detail; every section's rows, the
    deletions and the models searches ran under. A cell a spreadsheet would run as a formula is
    quoted (a user name or a refusal's reason is the caller's word)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "name", "count", "detail"])
    for title, attribute in SECTIONS:
        for name, count in getattr(report, attribute).most_common():
            writer.writerow([title, _cell(name), count, ""])
    writer.writerow(["review outcomes", "settled disputes (within the outcomes above)", report.settled_disputes, ""])
    for deletion in report.deletions:
        detail = f"{deletion['when']} by {deletion['by']}: {deletion['reason']}"
        writer.writerow(["deletions", _cell(deletion["what"]), "", _cell(detail)])
    models, _ = models_view(report)
    for name, metric, threshold, calibration, count in models:
        writer.writerow(["models", name, count, f"{metric} distance, threshold {threshold}, calibration {calibration}"])
    for row in proficiency_rows(report):
        detail = f"accuracy {row[2]}; false same {row[3]}; false different {row[4]}; inconclusive {row[5]}"
        writer.writerow(["reviewer proficiency", _cell(row[0]), row[1], detail])
    for name, rate in agreement_rows(report):
        writer.writerow(["agreement between reviewers", _cell(name), "", str(rate)])
    return out.getvalue()


def to_pdf(report: OversightReport) -> bytes:
    """The report as a PDF: every section's table, the deletions, and the models and calibrations
    searches ran under with their per-group figures. Set in DejaVu Sans (matplotlib's own copy), so
    any name in the records prints."""
    from fpdf import FPDF  # loaded when a PDF is made, not whenever the numbers are computed
    from matplotlib import get_data_path

    fonts = Path(get_data_path()) / "fonts" / "ttf"
    pdf = FPDF(format="A4")
    pdf.set_title(f"Candor oversight report, {report.period[0]} to {report.period[1]}")
    pdf.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()

    def heading(text: str, size: int = 12) -> None:
        pdf.set_font("DejaVu", "B", size)
        pdf.multi_cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("DejaVu", "", 9)

    def table(header: tuple[str, ...], rows: list[tuple[str, ...]], widths: tuple[int, ...]) -> None:
        if not rows:
            pdf.multi_cell(0, 5, "None.", new_x="LMARGIN", new_y="NEXT")
        else:
            with pdf.table(col_widths=widths, text_align="LEFT", line_height=5) as grid:
                for row in (header, *rows):
                    cells = grid.row()
                    for value in row:
                        cells.cell(str(value))
        pdf.ln(3)

    heading(f"Candor oversight report, {report.period[0]} to {report.period[1]}", 15)
    pdf.multi_cell(
        0, 5, f"Computed from {report.records} audit records of the period, and nothing else. Times are UTC.",
        new_x="LMARGIN", new_y="NEXT",
    )  # fmt: skip
    pdf.ln(3)
    for title, attribute in SECTIONS:
        heading(title.capitalize())
        if attribute == "reviews":
            pdf.multi_cell(0, 5, REVIEWS_NOTE.format(settled=report.settled_disputes), new_x="LMARGIN", new_y="NEXT")
        rows = [(name, str(count)) for name, count in getattr(report, attribute).most_common()]
        table(("", "count"), rows, (5, 1))
    heading("Deletions")
    rows = [(d["when"], d["by"], d["what"], d["reason"]) for d in report.deletions]
    table(("when", "by", "what", "reason"), rows, (3, 2, 3, 4))
    heading("Reviewer proficiency")
    pdf.multi_cell(0, 5, PROFICIENCY_NOTE, new_x="LMARGIN", new_y="NEXT")
    table(PROFICIENCY_HEADER, proficiency_rows(report), (3, 1, 4, 2, 2, 2))
    heading("Agreement between reviewers")
    pdf.multi_cell(0, 5, AGREEMENT_NOTE, new_x="LMARGIN", new_y="NEXT")
    table(("reviewers", "agreement [95 % CI]"), agreement_rows(report), (3, 5))
    heading("Models and calibrations in force")
    models, views = models_view(report)
    table(
        ("model", "distance", "threshold", "calibration", "searches"),
        [tuple(str(cell) for cell in row) for row in models],
        (2, 2, 2, 4, 1),
    )
    for view in views:
        heading(view.title, 10)
        pdf.multi_cell(0, 5, view.summary, new_x="LMARGIN", new_y="NEXT")
        table(
            ("group", "FMR [95 % CI]", "FNMR [95 % CI]", "rank-1", "FNIR (1:N)", "FPIR (1:N)"),
            view.rows,
            (2, 3, 3, 3, 3, 3),
        )
    return bytes(pdf.output())

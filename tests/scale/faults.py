"""The scale-out run's record of what was called and what was broken, and the table made from them:
for each fault, the searches during it and after it (count, errors, error rate, p99), the codes they
failed with, how long the broken part took to come back, and how long searches took to recover.

Times are the host's wall clock (the workload's container shares the host's kernel clock)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: After a part is back, searches are still counted as "during" the fault for this long: the
#: clients' reconnects and retries land in it.
SETTLE_S = 5.0


@dataclass(frozen=True)
class Op:
    """One call of the workload: what, when, and the gRPC code it ended with ("OK" when it succeeded)."""

    kind: str
    start: float
    end: float
    code: str
    detail: str = ""
    fields: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The op as one JSON object."""
        return {
            "kind": self.kind,
            "start": self.start,
            "end": self.end,
            "code": self.code,
            "detail": self.detail,
            **self.fields,
        }

    @classmethod
    def from_json(cls, line: dict[str, Any]) -> Op:
        """The op an ``as_json`` object holds."""
        known = {"kind", "start", "end", "code", "detail"}
        rest = {key: value for key, value in line.items() if key not in known}
        return cls(line["kind"], line["start"], line["end"], line["code"], line.get("detail", ""), rest)


def read_ops(path: Path) -> list[Op]:
    """The ops of an ``ops.jsonl``."""
    return [Op.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class Fault:
    """One fault injected: when, and when the part was back (healthy again, restarted or unpaused)."""

    name: str
    start: float
    restored: float


@dataclass(frozen=True)
class Window:
    """The searches of a span of time."""

    searches: int
    errors: int
    p99_ms: float
    codes: dict[str, int]

    @property
    def error_rate(self) -> float:
        """The share of searches that failed."""
        return self.errors / self.searches if self.searches else 0.0


@dataclass(frozen=True)
class Row:
    """One fault's line of the table."""

    fault: Fault
    during: Window
    after: Window
    #: Seconds from the fault until the part was back.
    back_s: float
    #: Seconds from the fault until the last search that failed because of it ended (0: none failed).
    recovered_s: float


def p99(values: Sequence[float]) -> float:
    """The 99th percentile (nearest rank); 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(0.99 * len(ordered) + 0.5) - 1))]


def window(searches: Sequence[Op], start: float, end: float) -> Window:
    """The searches that began in [start, end)."""
    inside = [op for op in searches if start <= op.start < end]
    failed = [op for op in inside if op.code != "OK"]
    return Window(
        len(inside),
        len(failed),
        round(p99([1000 * (op.end - op.start) for op in inside]), 1),
        dict(Counter(op.code for op in failed)),
    )


def fault_table(ops: Sequence[Op], faults: Sequence[Fault], end: float) -> list[Row]:
    """A row per fault: "during" runs from the fault until SETTLE_S after its part was back,
    "after" from there to the next fault (or ``end``)."""
    searches = [op for op in ops if op.kind == "search"]
    rows = []
    for index, fault in enumerate(faults):
        settled = fault.restored + SETTLE_S
        following = faults[index + 1].start if index + 1 < len(faults) else end
        failing = [op.end for op in searches if fault.start <= op.start < following and op.code != "OK"]
        rows.append(
            Row(
                fault,
                window(searches, fault.start, settled),
                window(searches, settled, following),
                round(fault.restored - fault.start, 1),
                round(max(failing) - fault.start, 1) if failing else 0.0,
            )
        )
    return rows


def markdown(rows: Sequence[Row], baseline: Window) -> str:
    """The table as Markdown, with the searches before the first fault as its first line."""
    lines = [
        "| fault | part back after | searches recovered after | during: searches, errors (rate), p99 | "
        "after: searches, errors (rate), p99 | failed with |",
        "|---|---|---|---|---|---|",
        f"| none (before the first fault) | | | {cell(baseline)} | | {codes(baseline)} |",
    ]
    for row in rows:
        lines.append(
            f"| {row.fault.name} | {row.back_s:.1f} s | {row.recovered_s:.1f} s | {cell(row.during)} | "
            f"{cell(row.after)} | {codes(row.during, row.after)} |"
        )
    return "\n".join(lines)


def cell(part: Window) -> str:
    """A window as "n, e (r %), p99 ms"."""
    return f"{part.searches}, {part.errors} ({100 * part.error_rate:.1f} %), {part.p99_ms:.0f} ms"


def codes(*parts: Window) -> str:
    """The codes failed searches ended with, or "-"."""
    total: Counter[str] = Counter()
    for part in parts:
        total.update(part.codes)
    return ", ".join(f"{code} x{count}" for code, count in sorted(total.items())) or "-"

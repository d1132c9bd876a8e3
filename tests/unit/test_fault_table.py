"""The scale-out run's fault table (tests.scale.faults), from a made-up record of calls."""

from __future__ import annotations

import json
from pathlib import Path

from tests.scale.faults import Fault, Op, fault_table, markdown, p99, read_ops, window


def search(start: float, seconds: float, code: str = "OK") -> Op:
    return Op("search", start, start + seconds, code, fields={"case": f"C-{start}"})


def test_each_fault_counts_the_searches_during_it_and_after_it_and_when_they_recovered() -> None:
    ops = [search(t, 0.1) for t in range(0, 10)]  # before any fault
    ops += [search(10, 0.2), search(11, 2.0, "UNAVAILABLE"), search(12, 0.5, "UNAVAILABLE"), search(14, 0.1)]
    ops += [search(t, 0.1) for t in range(20, 30)]
    ops += [Op("review.submit", 11, 11.5, "INTERNAL")]  # not a search: not in the table
    faults = [Fault("kill -9 gateway", 10.5, 13.0), Fault("pause matcher", 25.5, 27.0)]

    first, second = fault_table(ops, faults, end=30)

    assert (first.during.searches, first.during.errors, first.during.codes) == (3, 2, {"UNAVAILABLE": 2})
    assert first.during.p99_ms == 2000.0
    assert first.recovered_s == 2.5  # the last failing search (11 + 2.0) ended 2.5 s after the fault
    assert first.back_s == 2.5
    assert (first.after.searches, first.after.errors) == (6, 0)  # from 18 s to the next fault: 20 to 25
    assert (second.during.searches, second.during.errors, second.recovered_s) == (4, 0, 0.0)
    table = markdown([first, second], window([op for op in ops if op.kind == "search"], 0, 10))
    assert "| kill -9 gateway | 2.5 s | 2.5 s | 3, 2 (66.7 %), 2000 ms |" in table
    assert "UNAVAILABLE x2" in table


def test_p99_is_the_nearest_rank() -> None:
    assert p99([]) == 0.0
    assert p99([5.0]) == 5.0
    assert p99([float(n) for n in range(1, 101)]) == 99.0
    assert p99([float(n) for n in range(1, 1001)]) == 990.0


def test_ops_survive_their_json_lines(tmp_path: Path) -> None:
    op = Op("search", 1.5, 2.0, "UNAVAILABLE", "gateway went", {"case": "C-1", "expected": "obama"})
    path = tmp_path / "ops.jsonl"
    path.write_text(json.dumps(op.as_json()) + "\n")
    assert read_ops(path) == [op]

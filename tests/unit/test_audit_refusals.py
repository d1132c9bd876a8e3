"""Folding refused audit events: a few records of their own per publisher, then a count."""

from __future__ import annotations

import json

from candor_audit.refusals import FOLDED_KIND, RefusalFolder


def test_each_subject_gets_its_own_records_up_to_the_window_budget_then_a_folded_count() -> None:
    folder = RefusalFolder(per_window=3, window_s=60)
    admitted = [folder.admit("a", sequence, "forged", now=0.0) for sequence in range(1, 8)]
    assert admitted == [True, True, True, False, False, False, False]
    assert folder.admit("b", 8, "forged", now=0.0)  # another publisher has its own budget
    [entry] = folder.flush("2026-12-03T00:00:00.000000Z")
    details = json.loads(entry.details_json)
    assert entry.kind == FOLDED_KIND
    assert (details["subject"], details["count"], details["first_stream_sequence"]) == ("a", 4, 4)
    assert details["last_stream_sequence"] == 7 and details["reasons"] == ["forged"]
    assert folder.flush("2026-12-03T00:00:01.000000Z") == []  # flushed once


def test_the_budget_comes_back_when_the_window_has_passed() -> None:
    folder = RefusalFolder(per_window=1, window_s=60)
    assert folder.admit("a", 1, "forged", now=0.0)
    assert not folder.admit("a", 2, "forged", now=30.0)
    assert folder.admit("a", 3, "forged", now=61.0)

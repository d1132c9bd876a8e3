"""How well reviewers review, from the audit chain: each reviewer's accuracy on the known-answer
tests supervisors seeded (``proficiency.seeded``), and how often two reviewers of the same real
candidate reach the same kind of conclusion. Each rate comes with its exact 95 % interval.

A conclusion's kind: support ("same person", "probably same"), exclusion ("different",
"probably different"), or neither ("inconclusive", "insufficient"). On a test, support is correct
when the answer is "same", exclusion when it is "different"; "neither" is neither correct nor an
error, and counted apart, as proficiency tests in forensic practice count inconclusives.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from candor.audit.v1 import audit_pb2
from candor_kit.audit_events import record_details
from candor_kit.rates import clopper_pearson

SUPPORT = frozenset({"confirm", "probably-same"})
EXCLUSION = frozenset({"reject", "probably-different"})


def kind_of(decision: str) -> str:
    """A conclusion's kind: "same", "different" or "neither"."""
    return "same" if decision in SUPPORT else "different" if decision in EXCLUSION else "neither"


@dataclass(frozen=True)
class Rate:
    """A measured rate: how many of how many, with its exact 95 % interval."""

    count: int
    trials: int

    def __str__(self) -> str:
        if not self.trials:
            return "n/a (none yet)"
        low, high = clopper_pearson(self.count, self.trials)
        return f"{self.count / self.trials:.1%} [{low:.1%}, {high:.1%}] ({self.count}/{self.trials})"


@dataclass(frozen=True)
class ReviewerScore:
    """One reviewer's conclusions on known-answer tests."""

    reviewer: str
    tests: int
    #: Correct conclusions among the tests.
    accuracy: Rate
    #: "Same" on a pair of different people: the error that makes a false lead.
    false_same: int
    #: "Different" on a pair of the same person.
    false_different: int
    #: Inconclusive or insufficient.
    neither: int


def proficiency(records: Iterable[audit_pb2.AuditRecord], answers: Mapping[str, str]) -> list[ReviewerScore]:
    """Each reviewer's score on the seeded tests (``answers``: search id -> "same"/"different")
    from the period's ``review.submitted`` records, by reviewer name."""
    tallies: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])  # tests, correct, f-same, f-diff, neither
    for record in records:
        if record.event.kind != "review.submitted":
            continue
        details = record_details(record)
        answer = answers.get(str(details.get("search_id")))
        if answer is None or details.get("role") != "reviewer":
            continue
        said, tally = kind_of(str(details.get("decision"))), tallies[record.event.actor]
        tally[0] += 1
        tally[1] += said == answer
        tally[2] += said == "same" and answer == "different"
        tally[3] += said == "different" and answer == "same"
        tally[4] += said == "neither"
    return [ReviewerScore(name, t[0], Rate(t[1], t[0]), t[2], t[3], t[4]) for name, t in sorted(tallies.items())]


def agreement(records: Iterable[audit_pb2.AuditRecord], tests: Iterable[str]) -> tuple[Rate, dict[str, Rate]]:
    """How often two reviewers of the same real candidate reach the same kind of conclusion: over
    every pair of reviewers of a candidate, and per reviewer (their pairs with the others)."""
    left_out = set(tests)
    kinds: dict[tuple[str, int], list[tuple[str, str]]] = defaultdict(list)
    for record in records:
        details = record_details(record)
        if record.event.kind != "review.submitted" or details.get("role") != "reviewer":
            continue
        if str(details.get("search_id")) in left_out:
            continue
        candidate = (str(details.get("search_id")), int(details.get("rank", 0)))
        kinds[candidate].append((record.event.actor, kind_of(str(details.get("decision")))))
    agreed = compared = 0
    mine: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for concluded in kinds.values():
        for (first, a), (second, b) in itertools.combinations(concluded, 2):
            same = int(a == b)
            agreed, compared = agreed + same, compared + 1
            for name in (first, second):
                mine[name][0] += same
                mine[name][1] += 1
    return Rate(agreed, compared), {name: Rate(*counts) for name, counts in sorted(mine.items())}

"""The search policy: case number, allowed purpose and candidate-list size."""

from __future__ import annotations

import re
from dataclasses import dataclass

from candor_kit.errors import InvalidInput, PolicyViolation

CASE_NUMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{1,63}$")
LEAD_NOTICE = "investigative lead only: not a basis for arrest"


@dataclass(frozen=True)
class SearchPolicy:
    """What a search must carry, and how many candidates it may see."""

    allowed_purposes: frozenset[str]
    default_candidates: int = 10
    max_candidates: int = 50

    def check(self, case_number: str, purpose: str, requested: int) -> int:
        """Validate a search's case and purpose; returns the candidate-list size to use."""
        if not case_number:
            raise InvalidInput("a case number is required")
        if not CASE_NUMBER.match(case_number):
            raise InvalidInput("the case number must be 2-64 letters, digits or ._/-")
        if not purpose:
            raise InvalidInput("a purpose is required")
        if purpose not in self.allowed_purposes:
            raise PolicyViolation(
                f"purpose {purpose!r} is not allowed; allowed: {', '.join(sorted(self.allowed_purposes))}"
            )
        if requested < 0:
            raise InvalidInput("max_candidates cannot be negative")
        if requested > self.max_candidates:
            # Refused, not quietly cut: the requester learns the rule and the refusal is audited.
            raise PolicyViolation(f"max_candidates {requested} exceeds the policy's limit of {self.max_candidates}")
        return requested or self.default_candidates

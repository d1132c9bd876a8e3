"""Folding a flood of refused audit events into a few records.

Every refused event (a forgery under another service's kind, an oversized one) is an alarm worth
a record, but a flood of them must not stuff the chain nor slow it: each publisher subject gets
``PER_WINDOW`` records of its own per window; past that, the refusals are counted and the count is
appended as one ``audit.events_refused_folded`` record per subject when the batch of messages
ends. The refused messages themselves stay on the audit stream, which no user may purge.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from candor_kit.audit_records import AuditEntry, service_entry

FOLDED_KIND = "audit.events_refused_folded"
#: Individual refusal records per publisher subject and window.
PER_WINDOW = 10
WINDOW_S = 60.0


@dataclass
class _Folded:
    count: int
    first_sequence: int
    last_sequence: int
    reasons: set[str]


class RefusalFolder:
    """Decides which refusals get a record of their own, and counts the rest."""

    def __init__(self, per_window: int = PER_WINDOW, window_s: float = WINDOW_S) -> None:
        self._per_window = per_window
        self._window_s = window_s
        self._recorded: dict[str, list[float]] = {}
        self._folded: dict[str, _Folded] = {}

    def admit(self, subject: str, stream_sequence: int, reason: str, now: float | None = None) -> bool:
        """True when this refusal gets its own record; False when it is folded into a count."""
        now = time.monotonic() if now is None else now
        recent = [moment for moment in self._recorded.get(subject, []) if now - moment < self._window_s]
        if len(recent) < self._per_window:
            self._recorded[subject] = [*recent, now]
            return True
        self._recorded[subject] = recent
        folded = self._folded.setdefault(subject, _Folded(0, stream_sequence, stream_sequence, set()))
        folded.count += 1
        folded.last_sequence = stream_sequence
        if len(folded.reasons) < 5:
            folded.reasons.add(reason)
        return False

    def flush(self, now: str) -> list[AuditEntry]:
        """One record per subject of the refusals folded since the last flush."""
        entries = []
        for subject, folded in self._folded.items():
            details = {
                "subject": ascii(subject[:200])[1:-1],
                "count": folded.count,
                "first_stream_sequence": folded.first_sequence,
                "last_stream_sequence": folded.last_sequence,
                "reasons": sorted(folded.reasons),
            }
            entries.append(service_entry(FOLDED_KIND, f"folded.{uuid.uuid4()}", details, now))
        self._folded.clear()
        return entries

"""The audit record of a refused call: who, what, which rule, and why; never the photo itself.

A refused call's fields are the caller's word, unchecked (a refusal before authentication may come
from anyone), so a case number or purpose is recorded as given only when it has that field's shape.
Anything else is recorded by its SHA-256, its length and a short escaped excerpt: an 8 MB "case
number" costs the chain a few hundred bytes, and no control character reaches a record.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from candor_kit import AuditPublisher, CandorError
from candor_kit.policy import CASE_NUMBER, PURPOSE

#: How much of a malformed field's value the record keeps, escaped.
EXCERPT_CHARS = 32


async def audit_refusal(
    audit: AuditPublisher,
    action: str,
    error: CandorError,
    actor: str,
    *,
    case_number: str = "",
    purpose: str = "",
    image: bytes | None = None,
    **details: Any,
) -> None:
    """Publish ``<action>.refused`` with the status code, the reason, the rule broken (when the
    refusal is a policy rule's) and the photo's SHA-256 (when a photo came with the call)."""
    record: dict[str, Any] = {"code": error.code.value, "reason": error.message, **details}
    if error.rule:
        record["rule"] = error.rule
    if image:
        record["image_sha256"] = hashlib.sha256(image).hexdigest()
    case_number = _well_formed(case_number, CASE_NUMBER, "case_number", record)
    purpose = _well_formed(purpose, PURPOSE, "purpose", record)
    await audit.publish(f"{action}.refused", actor=actor, case_number=case_number, purpose=purpose, details=record)


def _well_formed(value: str, shape: re.Pattern[str], name: str, record: dict[str, Any]) -> str:
    """``value`` when it has the field's shape (or is empty); otherwise "" and a bounded
    description of it under ``<name>_malformed`` in ``record``."""
    if not value or shape.match(value):
        return value
    record[f"{name}_malformed"] = describe_malformed(value)
    return ""


def describe_malformed(value: str) -> dict[str, Any]:
    """A malformed text field, bounded: its length, SHA-256 and a short ASCII-escaped excerpt."""
    return {
        "length": len(value),
        "sha256": hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest(),
        "excerpt": ascii(value[:EXCERPT_CHARS])[1:-1],
    }

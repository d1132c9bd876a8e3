"""The audit record of a refused call: who, what, which rule, and why; never the photo itself."""

from __future__ import annotations

import hashlib
from typing import Any

from candor_kit import AuditPublisher, CandorError


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
    await audit.publish(f"{action}.refused", actor=actor, case_number=case_number, purpose=purpose, details=record)

"""Candor's webhook signatures, for receivers (and for the relay that makes them).

Each delivery carries ``Candor-Timestamp`` (Unix seconds) and ``Candor-Signature: v1=<hex>``,
the HMAC-SHA256 of ``<timestamp>.<body>`` under the endpoint's own secret. A receiver checks the
signature over the exact bytes it received and refuses a timestamp too far from its clock, so a
delivery captured on the way cannot be replayed later; ``Candor-Event-Id`` names the event, for
dropping a redelivery.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["SignatureError", "sign", "verify"]

#: How far a delivery's timestamp may be from the receiver's clock.
TOLERANCE_S = 300


class SignatureError(Exception):
    """A delivery whose signature or timestamp does not hold: refuse it (HTTP 400)."""


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``Candor-Signature`` header value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, tolerance_s: float = TOLERANCE_S) -> None:
    """Raise SignatureError unless ``signature`` is the endpoint's over this body and time, and the
    time is within ``tolerance_s`` of now."""
    try:
        sent = int(timestamp)
    except ValueError:
        raise SignatureError("Candor-Timestamp is not a number of seconds") from None
    if abs(time.time() - sent) > tolerance_s:
        raise SignatureError(f"the delivery was signed {abs(time.time() - sent):.0f} s from now: refused as a replay")
    if not hmac.compare_digest(sign(secret, timestamp, body), signature.strip()):
        raise SignatureError("Candor-Signature does not match: a wrong secret, or the body was changed")

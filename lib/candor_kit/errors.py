"""Domain errors shared by every service.

Core code raises these; the gRPC and NATS adapters translate them to wire status codes in one
place each (`candor_kit.grpc_server` and `candor_kit.bus`).
"""

from __future__ import annotations

import enum

#: The longest error message kept; longer ones are cut.
MAX_MESSAGE_CHARS = 1000


class ErrorCode(enum.Enum):
    """The status codes Candor uses; names match gRPC's ``StatusCode`` names."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


class CandorError(Exception):
    """A failure with a status code and a message that is safe to show the caller."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, rule: str = "") -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            # A message may quote the caller's input; it travels in a gRPC trailer (8 KB by default)
            # and in audit records, so it is bounded here, once, for every error.
            message = message[:MAX_MESSAGE_CHARS] + "…"
        super().__init__(message)
        self.message = message
        #: The policy rule the request broke (purpose, quota, ...), named in the audit record.
        self.rule = rule

    @staticmethod
    def from_code(code: ErrorCode, message: str) -> CandorError:
        """Rebuild the matching error subclass from a code received over the wire."""
        for cls in _ALL:
            if cls.code is code:
                return cls(message)
        return CandorError(message)


class InvalidInput(CandorError):
    """The request is malformed: a missing field, an unreadable image, a bad value."""

    code = ErrorCode.INVALID_ARGUMENT


class Unauthenticated(CandorError):
    """No valid credentials were presented."""

    code = ErrorCode.UNAUTHENTICATED


class PolicyViolation(CandorError):
    """The caller is known but the policy forbids the request (role, purpose, quota)."""

    code = ErrorCode.PERMISSION_DENIED


class QuotaExhausted(CandorError):
    """The caller has used up a quota of the policy (searches per day, say)."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class NotFound(CandorError):
    """The named thing does not exist."""

    code = ErrorCode.NOT_FOUND


class PreconditionFailed(CandorError):
    """The request is well formed but the system state rules it out (a model mismatch, say)."""

    code = ErrorCode.FAILED_PRECONDITION


class TooLarge(CandorError):
    """The request exceeds a size limit."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class Overloaded(CandorError):
    """The service is at its configured limit of work in flight; the caller may retry later."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(CandorError):
    """A downstream step did not answer in time."""

    code = ErrorCode.DEADLINE_EXCEEDED


class ServiceUnavailable(CandorError):
    """A downstream service or the message bus cannot be reached; retrying may help."""

    code = ErrorCode.UNAVAILABLE


class NotStored(ServiceUnavailable):
    """A durable publish that surely stored nothing (no stream answered, or the message never left
    this process), unlike one that timed out, which the stream may hold with its ack lost."""


class NoAnswer(ServiceUnavailable):
    """A downstream service took the request but sent no answer in time (paused, overloaded, or the
    request was lost with a NATS node): unavailable, not a missing service."""


class ConfigError(Exception):
    """A service's configuration is missing, invalid or unsafe; the service refuses to start."""


_ALL: tuple[type[CandorError], ...] = (
    InvalidInput,
    Unauthenticated,
    PolicyViolation,
    NotFound,
    PreconditionFailed,
    TooLarge,
    Overloaded,
    DeadlineExceeded,
    ServiceUnavailable,
    QuotaExhausted,
)

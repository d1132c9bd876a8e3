"""A gateway's refusal as the person at the command line reads it: the status (which scripts and
the integrators' table in docs/integrations.md go by), what happened in words, and what to do next.

The gateway's own messages already say what happened; gRPC's own (a deadline, a connection that
could not be made) do not, and are put in words here. Every status has its next step, so no
command ends on a bare code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc

from candor_cli.processes import StackError

_REPORT_IT = "report it to Candor's operator with the time it happened; the gateway's log has the cause"

#: What to do next, by status.
WHAT_TO_DO: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.INVALID_ARGUMENT: "correct what the message names and run the command again",
    grpc.StatusCode.UNAUTHENTICATED: (
        "get a new token (your sign-in may have ended or been revoked) and pass it as $CANDOR_TOKEN"
    ),
    grpc.StatusCode.PERMISSION_DENIED: (
        "your roles, the case or the purpose do not allow this; if you think they should, ask Candor's administrator"
    ),
    grpc.StatusCode.NOT_FOUND: "check the id or name you gave, and that it was not deleted meanwhile",
    grpc.StatusCode.ALREADY_EXISTS: "nothing to do again: it is there already",
    grpc.StatusCode.FAILED_PRECONDITION: "do first what the message names, then run the command again",
    grpc.StatusCode.ABORTED: "another call changed the same thing at the same time; run the command again",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "wait as long as the message says, or a minute, and run the command again",
    grpc.StatusCode.UNAVAILABLE: (
        "run the command again in a minute; if it goes on, check the stack (candor stack status, or the "
        "deployment's health page)"
    ),
    grpc.StatusCode.DEADLINE_EXCEEDED: (
        "run the command again; if it goes on, check the stack (candor stack status, or the deployment's health page)"
    ),
    grpc.StatusCode.CANCELLED: "the call was stopped before its answer came; run the command again",
    grpc.StatusCode.UNIMPLEMENTED: (
        "this gateway does not offer that call: it is older or newer than this command line; use the "
        "command line of the gateway's version"
    ),
    grpc.StatusCode.OUT_OF_RANGE: "correct what the message names and run the command again",
    grpc.StatusCode.DATA_LOSS: "report it to Candor's operator with the time it happened, and do not retry",
    grpc.StatusCode.INTERNAL: _REPORT_IT,
    grpc.StatusCode.UNKNOWN: _REPORT_IT,
}

#: gRPC's own words for a gateway that could not be reached, as its core library writes them.
_NOT_REACHED = ("failed to connect", "connection refused", "dns resolution failed", "socket closed", "connect failed")

#: A change the gateway runs to its end once begun, and what a second run of the command shows.
RUNS_TO_ITS_END = {
    "deletion": (
        "A deletion it had begun still goes on to its end (records, photos and audit record). Run the "
        "same command again in a minute: it deletes whatever is left, and says 0 record(s) (a subject) "
        "or that no gallery holds it (a record) once nothing is"
    ),
    "enrolment": (
        "An enrolment it had begun still goes on to its end (photo, record and audit record). Run the "
        "same command again in a minute: the same photo of a subject is enrolled once, and it says "
        "'already enrolled' if the first one was"
    ),
}


def rpc_error_text(error: grpc.RpcError) -> str:
    """``STATUS: what happened`` and, on the next line, what to do."""
    code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
    details: str = error.details() or ""  # type: ignore[attr-defined]
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and details.lower() == "deadline exceeded":
        details = "the gateway did not answer in time"
    elif code == grpc.StatusCode.UNAVAILABLE and any(words in details.lower() for words in _NOT_REACHED):
        details = "the gateway cannot be reached at the address given (--gateway or $CANDOR_GATEWAY)"
    elif not details:
        details = "the gateway gave no reason"
    what_to_do = WHAT_TO_DO.get(code, "run the command again, and report it if it happens again")
    return f"{code.name}: {details}\n  what to do: {what_to_do}"


@contextlib.contextmanager
def answered_late(change: str) -> Iterator[None]:
    """A ``change`` (a key of RUNS_TO_ITS_END) whose answer came too late says what became of it:
    the gateway runs one it began to its end whoever stops waiting, so running it again is safe."""
    try:
        yield
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # type: ignore[attr-defined]
            raise
        raise StackError(f"the gateway did not answer in time. {RUNS_TO_ITS_END[change]}") from error


__all__ = ["RUNS_TO_ITS_END", "WHAT_TO_DO", "answered_late", "rpc_error_text"]

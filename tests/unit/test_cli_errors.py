"""What the command line prints when a command fails: a reason a person can act on, always."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import grpc
import pytest

from candor_cli import main as cli
from candor_cli.processes import StackError
from candor_cli.rpc_errors import WHAT_TO_DO, answered_late, rpc_error_text


@pytest.mark.parametrize(
    ("raised", "says"),
    [
        (TimeoutError(), "did not answer in time"),  # nats-py's bare asyncio.TimeoutError, say
        (OSError(), "stopped without a reason"),
        (ValueError("--since: give a time"), "--since: give a time"),
    ],
)
def test_a_failing_command_prints_a_reason_even_when_the_error_carries_none(
    raised: Exception, says: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(_args: argparse.Namespace) -> int:
        raise raised

    monkeypatch.setattr(cli, "_run", fail)
    assert cli.main(["stack", "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and "Error" not in err


@pytest.mark.parametrize(
    ("count", "says"), [(1, "one stored gallery photo has a header"), (3, "3 stored gallery photos")]
)
def test_an_expunge_that_kept_unreadable_photos_says_so_and_where_to_read_what_to_do(count: int, says: str) -> None:
    warning = cli._unreadable_photos_warning(count)
    assert warning.startswith("warning: ") and says in warning and "kept" in warning
    # The section it sends the reader to exists.
    section = warning.split('"')[1]
    readme = (Path(__file__).parents[2] / "deploy" / "README.md").read_text()
    assert f"### {section}\n" in readme


class _Answered(grpc.RpcError):
    """A gateway's answer as the client raises it (a stand-in for grpc's own error object)."""

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__(code.name)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(("change", "parts"), [("deletion", "records, photos"), ("enrolment", "photo, record")])
def test_a_change_answered_too_late_says_it_goes_on_and_how_to_see_what_became_of_it(change: str, parts: str) -> None:
    with pytest.raises(StackError) as late, answered_late(change):
        raise _Answered(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    says = str(late.value)
    assert "did not answer in time" in says and "goes on to its end" in says and parts in says
    assert "Run the same command again" in says
    with pytest.raises(_Answered), answered_late(change):  # any other answer is the gateway's own
        raise _Answered(grpc.StatusCode.PERMISSION_DENIED)


@pytest.mark.parametrize("code", [code for code in grpc.StatusCode if code != grpc.StatusCode.OK])
def test_every_refusal_prints_its_status_what_happened_and_what_to_do(
    code: grpc.StatusCode, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(_args: argparse.Namespace) -> int:
        raise _Answered(code, "")

    monkeypatch.setattr(cli, "_run", refused)
    assert cli.main(["stack", "status"]) == 2
    first, advice = capsys.readouterr().err.rstrip("\n").split("\n")
    assert first.startswith(f"error: {code.name}: ") and len(first) > len(f"error: {code.name}: ") + 10
    assert code in WHAT_TO_DO and advice == f"  what to do: {WHAT_TO_DO[code]}"


def test_grpcs_own_words_for_a_deadline_and_an_unreachable_gateway_are_put_in_plain_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A real channel to a port nobody listens on: gRPC's own message, not a stand-in's.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert cli.main(["--gateway", f"127.0.0.1:{port}", "--token", "x", "faces", str(Path(__file__))]) == 2
    said = capsys.readouterr().err
    assert said.startswith("error: UNAVAILABLE: the gateway cannot be reached"), said
    assert "errno" not in said.lower() and "Connection refused" not in said
    late = rpc_error_text(_Answered(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    assert late.startswith("DEADLINE_EXCEEDED: the gateway did not answer in time")
    # The gateway's own words are kept as they are.
    own = rpc_error_text(_Answered(grpc.StatusCode.UNAVAILABLE, "the matcher did not answer within 4 s; try again"))
    assert own.startswith("UNAVAILABLE: the matcher did not answer within 4 s; try again\n")

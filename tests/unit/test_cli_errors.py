"""What the command line prints when a command fails: a reason a person can act on, always."""

from __future__ import annotations

import argparse
from pathlib import Path

import grpc
import pytest

from candor_cli import main as cli
from candor_cli.processes import StackError


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

    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def test_a_deletion_answered_too_late_says_it_goes_on_and_how_to_see_what_is_left() -> None:
    with pytest.raises(StackError) as late, cli._deletion_answered_late():
        raise _Answered(grpc.StatusCode.DEADLINE_EXCEEDED)
    says = str(late.value)
    assert "did not answer in time" in says and "goes on to its end" in says and "Run the same command again" in says
    with pytest.raises(_Answered), cli._deletion_answered_late():  # any other answer is the gateway's own
        raise _Answered(grpc.StatusCode.PERMISSION_DENIED)

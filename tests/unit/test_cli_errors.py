"""What the command line prints when a command fails: a reason a person can act on, always."""

from __future__ import annotations

import argparse

import pytest

from candor_cli import main as cli


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

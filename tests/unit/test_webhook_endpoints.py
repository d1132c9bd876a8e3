"""The webhook relay's endpoints file is checked before anything runs, and the signatures it makes
are the ones a receiver checks: a changed body, a wrong secret or an old delivery is refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from candor_cli.webhooks import load_endpoints
from candor_client import SignatureError, sign, verify


def test_an_unsafe_endpoints_file_is_refused_naming_each_problem(tmp_path: Path) -> None:
    (tmp_path / "short").write_text("too-short")
    path = tmp_path / "endpoints.yaml"
    path.write_text(
        json.dumps(
            {
                "endpoints": [
                    {"name": "cms", "url": "http://cms.agency.example/hook", "secret_file": str(tmp_path / "short")},
                    {"name": "Bad Name", "url": "https://x.example", "secret_file": str(tmp_path / "short")},
                ]
            }
        )
    )
    with pytest.raises(ValueError, match="a name is 1 to 32"):
        load_endpoints(path)
    path.write_text(
        json.dumps({"endpoints": [{"name": "cms", "url": "http://cms.agency.example/h", "secret_file": "/nope"}]})
    )
    with pytest.raises(ValueError, match=r"plain http to cms\.agency\.example") as refused:
        load_endpoints(path)
    assert "its secret file cannot be read" in str(refused.value)


def test_a_signature_holds_for_its_body_secret_and_time_only() -> None:
    secret, body, now = b"k" * 40, b'{"kind":"review.confirmed"}', str(int(time.time()))
    signature = sign(secret, now, body)
    verify(secret, now, body, signature)
    for changed in (
        (b"x" * 40, now, body, signature),
        (secret, now, body + b" ", signature),
        (secret, str(int(now) - 1), body, signature),
    ):
        with pytest.raises(SignatureError, match="does not match"):
            verify(*changed)
    old = str(int(time.time()) - 3600)
    with pytest.raises(SignatureError, match="refused as a replay"):
        verify(secret, old, body, sign(secret, old, body))

"""Tokens, roles and the search policy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from candor_gateway import Permission, SearchPolicy, TokenRegistry, token_digest
from candor_kit import ConfigError, InvalidInput, PolicyViolation, Unauthenticated


def write_tokens(path: Path, entries: list[dict[str, object]], mode: int = 0o600) -> Path:
    path.write_text(json.dumps({"tokens": entries}))
    os.chmod(path, mode)
    return path


def test_valid_token_maps_to_its_user(tmp_path: Path) -> None:
    registry = TokenRegistry.load(
        write_tokens(
            tmp_path / "t.json", [{"sha256": token_digest("s3cret"), "user": "ann", "roles": ["investigator"]}]
        )
    )
    assert registry.authenticate("Bearer s3cret").user == "ann"


@pytest.mark.parametrize("header", [None, "", "s3cret", "Bearer wrong", "Basic s3cret"])
def test_missing_or_wrong_token_is_unauthenticated(tmp_path: Path, header: str | None) -> None:
    registry = TokenRegistry.load(
        write_tokens(
            tmp_path / "t.json", [{"sha256": token_digest("s3cret"), "user": "ann", "roles": ["investigator"]}]
        )
    )
    with pytest.raises(Unauthenticated):
        registry.authenticate(header)


def test_role_without_permission_is_denied(tmp_path: Path) -> None:
    registry = TokenRegistry.load(
        write_tokens(tmp_path / "t.json", [{"sha256": token_digest("x"), "user": "aud", "roles": ["auditor"]}])
    )
    principal = registry.authenticate("Bearer x")
    principal.require(Permission.VERIFY_AUDIT)
    with pytest.raises(PolicyViolation):
        principal.require(Permission.SEARCH)


@pytest.mark.parametrize(
    ("entries", "mode", "message"),
    [
        ([], 0o600, "lists no tokens"),
        ([{"sha256": "abc", "user": "u", "roles": ["auditor"]}], 0o600, "64 hex"),
        ([{"sha256": "a" * 64, "user": "u", "roles": ["superuser"]}], 0o600, "known roles"),
        ([{"sha256": "a" * 64, "user": "u", "roles": ["auditor"]}], 0o666, "writable by others"),
    ],
)
def test_unsafe_or_invalid_tokens_file_is_refused(
    tmp_path: Path, entries: list[dict[str, object]], mode: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TokenRegistry.load(write_tokens(tmp_path / "t.json", entries, mode))


POLICY = SearchPolicy(frozenset({"investigation"}), default_candidates=10, max_candidates=20)


def test_policy_requires_case_and_purpose() -> None:
    with pytest.raises(InvalidInput, match="case number"):
        POLICY.check("", "investigation", 0)
    with pytest.raises(InvalidInput, match="purpose is required"):
        POLICY.check("CASE-1", "", 0)
    with pytest.raises(InvalidInput, match="case number must"):
        POLICY.check("CASE 1; DROP", "investigation", 0)


def test_purpose_outside_the_allow_list_is_denied() -> None:
    with pytest.raises(PolicyViolation, match="not allowed"):
        POLICY.check("CASE-1", "curiosity", 0)


def test_candidate_list_size_defaults_and_is_capped() -> None:
    assert POLICY.check("CASE-1", "investigation", 0) == 10
    assert POLICY.check("CASE-1", "investigation", 500) == 20

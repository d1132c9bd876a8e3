"""Signed bearer tokens and the per-RPC role allow-lists."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from candor_gateway.access import RPC_ROLES, Permission, require
from candor_kit import ConfigError, PolicyViolation, Unauthenticated
from candor_kit.keys import generate_token_keys
from candor_kit.tokens import ROLES, TokenVerifier, issue_token, load_private_key, load_public_keys

PRIVATE_PEM, PUBLIC_PEM = generate_token_keys()
KEY = load_private_key(PRIVATE_PEM)
VERIFIER = TokenVerifier(load_public_keys(PUBLIC_PEM.decode()), "candor-test", "candor-gateway", max_ttl_s=86400)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_a_signed_token_names_its_user_and_roles() -> None:
    token = issue_token(KEY, "ann", ["investigator", "reviewer"], 600, "candor-test", "candor-gateway")
    principal = VERIFIER.authenticate(bearer(token))
    assert principal.user == "ann" and principal.roles == {"investigator", "reviewer"}


def test_an_rsa_signed_token_is_accepted_too() -> None:
    from cryptography.hazmat.primitives import serialization

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    both = TokenVerifier(load_public_keys(PUBLIC_PEM.decode() + pem.decode()), "candor-test", "candor-gateway")
    token = issue_token(rsa_key, "rob", ["auditor"], 600, "candor-test", "candor-gateway")
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert both.authenticate(bearer(token)).user == "rob"


def claims(**changes: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": "candor-test", "aud": "candor-gateway", "sub": "ann", "roles": ["investigator"],
        "iat": now, "exp": now + 600,
    }  # fmt: skip
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


@pytest.mark.parametrize(
    ("token", "message"),
    # Tokens are made when the test runs, not when it is collected: a long run must not expire them.
    [
        (lambda: None, "bearer token is required"),
        (lambda: "not a jwt", "not a JWT"),
        (lambda: jwt.encode(claims(), key=None, algorithm="none"), "algorithm 'none'"),
        (lambda: jwt.encode(claims(), "shared-secret-of-at-least-32-bytes!!", algorithm="HS256"), "algorithm 'HS256'"),
        (lambda: jwt.encode(claims(exp=int(time.time()) - 3600), KEY, algorithm="EdDSA"), "expired"),
        (lambda: jwt.encode(claims(aud="another-service"), KEY, algorithm="EdDSA"), "another audience"),
        (lambda: jwt.encode(claims(iss="someone-else"), KEY, algorithm="EdDSA"), "unknown issuer"),
        (lambda: jwt.encode(claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA"), "not from a trusted key"),
        (lambda: jwt.encode(claims(exp=int(time.time()) + 30 * 86400), KEY, algorithm="EdDSA"), "lives longer"),
        (lambda: jwt.encode(claims(roles=["superuser"]), KEY, algorithm="EdDSA"), "unknown roles"),
        (lambda: jwt.encode(claims(roles=None), KEY, algorithm="EdDSA"), "no roles"),
        (lambda: jwt.encode(claims(sub=None), KEY, algorithm="EdDSA"), "not valid"),
    ],
    ids=[
        "missing",
        "garbage",
        "unsigned",
        "hmac",
        "expired",
        "audience",
        "issuer",
        "untrusted-key",
        "too-long",
        "unknown-role",
        "no-roles",
        "no-subject",
    ],
)
def test_unsigned_expired_or_foreign_tokens_are_refused(token: Callable[[], str | None], message: str) -> None:
    made = token()
    with pytest.raises(Unauthenticated, match=message):
        VERIFIER.authenticate(bearer(made) if made else None)


def test_every_rpc_has_an_allow_list_of_known_roles() -> None:
    assert set(RPC_ROLES) == set(Permission)
    for roles in RPC_ROLES.values():
        assert roles and roles <= set(ROLES)


def test_a_role_off_the_allow_list_is_denied() -> None:
    principal = VERIFIER.authenticate(
        bearer(issue_token(KEY, "aud", ["auditor"], 600, "candor-test", "candor-gateway"))
    )
    require(principal, Permission.VERIFY_AUDIT)
    with pytest.raises(PolicyViolation, match="may not call Search"):
        require(principal, Permission.SEARCH)


def test_token_keys_must_be_public_ed25519_or_rsa() -> None:
    with pytest.raises(ConfigError, match="no PEM public key"):
        load_public_keys("")
    with pytest.raises(ValueError, match="unknown roles: superuser"):
        issue_token(KEY, "ann", ["superuser"], 600, "candor-test", "candor-gateway")


def test_a_service_account_token_is_known_as_one() -> None:
    token = issue_token(KEY, "agency-cms", ["case-system"], 600, "candor-test", "candor-gateway")
    principal = VERIFIER.authenticate(bearer(token))
    assert principal.user == "agency-cms" and principal.service_account
    person = issue_token(KEY, "ann", ["investigator"], 600, "candor-test", "candor-gateway")
    assert not VERIFIER.authenticate(bearer(person)).service_account


@pytest.mark.parametrize(
    "roles", [["case-system", "reviewer"], ["booking-sync", "gallery-admin"], ["case-system", "booking-sync"]]
)
def test_a_service_account_holds_its_own_role_and_no_other(roles: list[str]) -> None:
    # A case system that also held "reviewer" could review its own leads.
    token = jwt.encode(claims(roles=roles), PRIVATE_PEM, algorithm="EdDSA")
    with pytest.raises(Unauthenticated, match="service account"):
        VERIFIER.authenticate(bearer(token))
    with pytest.raises(ValueError, match="service account"):
        issue_token(KEY, "mixed", roles, 600, "candor-test", "candor-gateway")


def test_service_accounts_never_review_nor_read_photos() -> None:
    for role in ("case-system", "booking-sync"):
        for permission in (
            Permission.LIST_REVIEWS,
            Permission.SUBMIT_REVIEW,
            Permission.RECORD_ANALYSIS,
            Permission.GET_SEARCH_PHOTO,
            Permission.GET_RECORD_PHOTO,
            Permission.LIST_AUDIT,
            Permission.GET_CASE,
        ):
            assert role not in RPC_ROLES[permission], (role, permission)
    assert "case-system" not in RPC_ROLES[Permission.ENROLL]
    assert "booking-sync" not in RPC_ROLES[Permission.SEARCH]


def test_the_cli_issues_a_service_account_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from candor_cli.main import main

    key = tmp_path / "token.key"
    key.write_bytes(PRIVATE_PEM)
    argv = ["token", "issue", "--user", "agency-cms", "--service-account", "case-system", "--key", str(key)]
    assert main([*argv, "--issuer", "candor-test", "--audience", "candor-gateway", "--ttl", "10m"]) == 0
    principal = VERIFIER.authenticate(bearer(capsys.readouterr().out.strip()))
    assert principal.user == "agency-cms" and principal.roles == {"case-system"} and principal.service_account
    # One role a token: a service account with a person's role besides is a usage error.
    argv = ["token", "issue", "--user", "x", "--roles", "case-system,reviewer", "--key", str(key)]
    assert main([*argv, "--issuer", "candor-test"]) == 2
    assert "service account holds its own role" in capsys.readouterr().err

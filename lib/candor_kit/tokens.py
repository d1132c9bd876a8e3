"""Bearer tokens: who is calling, checked, and (for development and tests) issued.

Callers present signed JWTs (EdDSA or RS256) as bearer tokens; a verifier checks the signature
against its trusted public keys, the issuer, the audience, the expiry and the lifetime, and takes
the user from ``sub`` and the roles from ``roles``. The gateway authenticates every call with it and
the review desk its sign-ins; the CLI issues tokens on the local stack. Tokens are never stored or
logged. What each role may do is the gateway's to decide (candor_gateway.access).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from candor_kit import catalogue
from candor_kit.errors import ConfigError, Unauthenticated
from candor_kit.settings import EnvReader

#: The roles of people.
PERSON_ROLES = ("investigator", "reviewer", "supervisor", "auditor", "gallery-admin", "admin")
#: The roles of machine identities (service accounts: a case-management system, a booking system's
#: sync). A service account's token holds exactly one of them and no role of a person, so that no
#: integration can, say, review the leads it searched for.
SERVICE_ACCOUNT_ROLES = ("case-system", "booking-sync")
#: The roles a token may carry.
ROLES = PERSON_ROLES + SERVICE_ACCOUNT_ROLES
#: The signature algorithms accepted; "none" and the HMAC family never are.
ALGORITHMS = ("EdDSA", "RS256")


def bearer_token(authorization: str | None) -> str:
    """The token of an ``authorization: Bearer <jwt>`` value; Unauthenticated when there is none."""
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthenticated("a bearer token is required")
    return authorization.removeprefix("Bearer ").strip()


#: The longest user name a token may carry.
MAX_USER_CHARS = 256


@dataclass(frozen=True)
class Principal:
    """An authenticated user."""

    user: str
    roles: frozenset[str]
    #: When the token expires (Unix seconds); 0 when not known.
    expires_at: int = 0

    @property
    def service_account(self) -> bool:
        """Whether this is a machine identity (its one role is a service account's)."""
        return bool(self.roles & set(SERVICE_ACCOUNT_ROLES))


def roles_problem(roles: Iterable[str]) -> str | None:
    """What is wrong with a token's set of roles, or None: unknown roles, or a service account's
    role held with any other."""
    held = set(roles)
    unknown = sorted(held - set(ROLES))
    if unknown:
        return f"unknown roles: {', '.join(unknown)} (known: {', '.join(ROLES)})"
    accounts = held & set(SERVICE_ACCOUNT_ROLES)
    if accounts and len(held) > 1:
        return (
            f"a service account holds its own role and no other; this token holds {', '.join(sorted(held))}: "
            "issue one token for each account"
        )
    return None


PublicKey = Ed25519PublicKey | RSAPublicKey
PrivateKey = Ed25519PrivateKey | RSAPrivateKey


def load_public_keys(pem: str) -> list[PublicKey]:
    """Every public key in a PEM bundle (several while keys rotate); Ed25519 or RSA only."""
    keys: list[PublicKey] = []
    for block in pem.split("-----END PUBLIC KEY-----"):
        if "-----BEGIN PUBLIC KEY-----" not in block:
            continue
        key = serialization.load_pem_public_key((block.strip() + "\n-----END PUBLIC KEY-----\n").encode("ascii"))
        if not isinstance(key, (Ed25519PublicKey, RSAPublicKey)):
            raise ConfigError("token keys must be Ed25519 or RSA public keys")
        if isinstance(key, RSAPublicKey) and key.key_size < 2048:
            raise ConfigError("RSA token keys must have at least 2048 bits")
        keys.append(key)
    if not keys:
        raise ConfigError("no PEM public key found for token verification")
    return keys


class TokenVerifier:
    """Checks bearer JWTs: signature by a trusted key, issuer, audience, expiry, lifetime, roles."""

    def __init__(
        self, keys: Iterable[PublicKey], issuer: str, audience: str, max_ttl_s: int = 86400, leeway_s: int = 30
    ) -> None:
        self._keys = list(keys)
        self._issuer = issuer
        self._audience = audience
        self._max_ttl_s = max_ttl_s
        self._leeway_s = leeway_s

    @property
    def leeway_s(self) -> int:
        """How long past its expiry a token is still accepted (clock skew between machines)."""
        return int(self._leeway_s)

    @property
    def longest_life_s(self) -> int:
        """The longest any accepted token stays valid, leeway included."""
        return int(self._max_ttl_s + self._leeway_s)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an ``authorization: Bearer <jwt>`` value."""
        claims = self._claims(bearer_token(authorization))
        if claims["exp"] - claims["iat"] > self._max_ttl_s:
            raise Unauthenticated(f"the token lives longer than the {self._max_ttl_s} s allowed")
        roles = claims.get("roles")
        if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
            raise Unauthenticated("the token carries no roles")
        problem = roles_problem(roles)
        if problem:
            raise Unauthenticated(f"the token's roles are refused: {problem}")
        user = str(claims["sub"])
        if not user.strip() or user != user.strip() or len(user) > MAX_USER_CHARS or not user.isprintable():
            # Every rule that counts people (two different reviewers, not the searcher) needs a name.
            raise Unauthenticated(
                f"the token's user (sub) must be 1 to {MAX_USER_CHARS} printable characters, not blank"
            )
        return Principal(user=user, roles=frozenset(roles), expires_at=int(claims["exp"]))

    def _claims(self, token: str) -> Mapping[str, Any]:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise Unauthenticated("the token is not a JWT") from exc
        if algorithm not in ALGORITHMS:
            raise Unauthenticated(f"the token's algorithm {algorithm!r} is not accepted")
        last: Exception | None = None
        family = Ed25519PublicKey if algorithm == "EdDSA" else RSAPublicKey
        for key in (key for key in self._keys if isinstance(key, family)):
            try:
                return jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self._audience,
                    issuer=self._issuer,
                    leeway=self._leeway_s,
                    options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                )
            except jwt.InvalidSignatureError as exc:
                last = exc  # perhaps another trusted key signed it
            except jwt.ExpiredSignatureError as exc:
                raise Unauthenticated("the token has expired") from exc
            except jwt.InvalidAudienceError as exc:
                raise Unauthenticated("the token is for another audience") from exc
            except jwt.InvalidIssuerError as exc:
                raise Unauthenticated("the token is from an unknown issuer") from exc
            except jwt.PyJWTError as exc:
                raise Unauthenticated(f"the token is not valid: {exc}") from exc
        raise Unauthenticated("the token's signature is not from a trusted key") from last


def issue_token(
    private_key: PrivateKey, user: str, roles: Iterable[str], ttl_s: int, issuer: str, audience: str
) -> str:
    """A signed JWT for ``user`` with ``roles``, valid for ``ttl_s`` seconds (development and tests;
    production tokens come from the agency's identity provider)."""
    roles = sorted(set(roles))
    problem = "no role given" if not roles else roles_problem(roles)
    if problem:
        raise ValueError(problem)
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": user,
        "roles": roles,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        "jti": str(uuid.uuid4()),
    }
    algorithm = "EdDSA" if isinstance(private_key, Ed25519PrivateKey) else "RS256"
    return jwt.encode(claims, private_key, algorithm=algorithm)


def load_private_key(pem: bytes) -> PrivateKey:
    """A token-signing key from PEM: Ed25519 or RSA."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, (Ed25519PrivateKey, RSAPrivateKey)):
        raise ValueError("token keys must be Ed25519 or RSA")
    return key


def read_token_verifier(env: EnvReader) -> TokenVerifier | None:
    """The JWT settings: the trusted public keys (file or environment), issuer, audience, limits."""
    issuer, audience = env.get(catalogue.GATEWAY_JWT_ISSUER), env.get(catalogue.GATEWAY_JWT_AUDIENCE)
    keys_file, keys_text = env.get(catalogue.GATEWAY_JWT_KEYS_FILE), env.get(catalogue.GATEWAY_JWT_KEYS)
    max_ttl_s, leeway_s = env.get(catalogue.GATEWAY_JWT_MAX_TTL_S), env.get(catalogue.GATEWAY_JWT_LEEWAY_S)
    if bool(keys_file) == bool(keys_text):
        env.problem("set one of CANDOR_GATEWAY_JWT_KEYS_FILE and CANDOR_GATEWAY_JWT_KEYS (the trusted token keys)")
        return None
    try:
        pem = Path(keys_file).read_text() if keys_file else keys_text
        keys = load_public_keys(pem)
    except (OSError, ValueError, ConfigError) as exc:
        env.problem(f"token keys: {exc}")
        return None
    return TokenVerifier(keys, issuer, audience, max_ttl_s, leeway_s)

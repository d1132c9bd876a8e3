"""Who is calling, and what their role lets them do.

Tokens are never stored: the tokens file holds the SHA-256 of each token with its user and roles.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from candor_kit.errors import ConfigError, PolicyViolation, Unauthenticated


class Permission(enum.Enum):
    """What a call needs."""

    SEARCH = "search"
    ENROLL = "enroll"
    DELETE = "delete"
    VERIFY_AUDIT = "verify_audit"
    EXPORT_CASE = "export_case"
    DETECT = "detect"


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "investigator": frozenset({Permission.SEARCH, Permission.DETECT}),
    "enroller": frozenset({Permission.ENROLL, Permission.DELETE, Permission.DETECT}),
    "auditor": frozenset({Permission.VERIFY_AUDIT, Permission.EXPORT_CASE}),
}


@dataclass(frozen=True)
class Principal:
    """An authenticated user."""

    user: str
    roles: frozenset[str]

    def require(self, permission: Permission) -> None:
        """Raise PolicyViolation unless one of the roles grants the permission."""
        if not any(permission in ROLE_PERMISSIONS.get(role, frozenset()) for role in self.roles):
            raise PolicyViolation(f"user {self.user} may not {permission.value}")


def token_digest(token: str) -> str:
    """The form a token is stored in."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenRegistry:
    """Maps bearer tokens to principals by their SHA-256."""

    def __init__(self, principals: dict[str, Principal]) -> None:
        self._by_digest = principals

    @classmethod
    def load(cls, path: Path) -> TokenRegistry:
        """Read ``{"tokens": [{"sha256": ..., "user": ..., "roles": [...]}]}``.

        Refuses a missing, malformed or group/world-writable file, unknown roles and an empty list.
        """
        try:
            mode = path.stat().st_mode
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"tokens file {path} is unreadable: {exc}") from exc
        if mode & (stat.S_IWGRP | stat.S_IWOTH) and os.name == "posix":
            raise ConfigError(f"tokens file {path} is writable by others; chmod 600 it")
        principals: dict[str, Principal] = {}
        for item in document.get("tokens", []) if isinstance(document, dict) else []:
            digest, user, roles = item.get("sha256", ""), item.get("user", ""), item.get("roles", [])
            if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
                raise ConfigError(f"tokens file {path}: sha256 of user {user!r} is not 64 hex digits")
            unknown = set(roles) - set(ROLE_PERMISSIONS)
            if not user or not roles or unknown:
                raise ConfigError(f"tokens file {path}: entry for {user!r} needs a user and known roles")
            principals[digest] = Principal(user=user, roles=frozenset(roles))
        if not principals:
            raise ConfigError(f"tokens file {path} lists no tokens")
        return cls(principals)

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an ``authorization: Bearer <token>`` value."""
        if not authorization or not authorization.startswith("Bearer "):
            raise Unauthenticated("a bearer token is required")
        principal = self._by_digest.get(token_digest(authorization.removeprefix("Bearer ").strip()))
        if principal is None:
            raise Unauthenticated("the token is not valid")
        return principal

"""The audit service's settings: where the chain is kept (SQLite or PostgreSQL, never PostgreSQL
in plaintext unless allowed), its signing key, and how often checkpoints are made."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from candor_audit.chain import AuditChain, PostgresAuditChain, SqlAuditChain
from candor_kit import CommonSettings, EnvReader, catalogue
from candor_kit.audit_signing import Signer


@dataclass(frozen=True)
class AuditSettings:
    """Audit configuration, from the environment."""

    common: CommonSettings
    database: Path | None
    batch: int
    stream_replicas: int = 1
    #: libpq connection string when the chain is kept in PostgreSQL (read from a secret file).
    postgres_dsn: str = field(default="", repr=False)
    #: The Ed25519 key that signs records and checkpoints.
    signing_key_file: Path = Path()
    checkpoint_interval_s: float = 60.0
    #: How long the event feed keeps an event.
    feed_max_age_days: int = 30

    @classmethod
    def from_env(cls, env: EnvReader | None = None) -> AuditSettings:
        """Read the audit settings (catalogue.SERVICES["audit"]); raises ConfigError naming every bad value."""
        env = env or EnvReader()
        common = CommonSettings.read("audit", env)
        backend = env.get(catalogue.AUDIT_BACKEND)
        database, dsn = env.get(catalogue.AUDIT_DB), ""
        dsn_file = env.get(catalogue.AUDIT_POSTGRES_DSN_FILE)
        plaintext_allowed = env.get(catalogue.AUDIT_POSTGRES_PLAINTEXT) == "allow"
        if backend == "postgres" and dsn_file and Path(dsn_file).is_file():
            dsn = Path(dsn_file).read_text().strip()
            problem = postgres_dsn_problem(dsn, plaintext_allowed)
            if problem:
                env.problem(f"CANDOR_AUDIT_POSTGRES_DSN_FILE: {problem}")
        settings = cls(
            common=common,
            database=Path(database) if backend == "sqlite" and database else None,
            batch=env.get(catalogue.AUDIT_FETCH_BATCH),
            stream_replicas=env.get(catalogue.AUDIT_STREAM_REPLICAS),
            postgres_dsn=dsn,
            signing_key_file=Path(env.get(catalogue.AUDIT_SIGNING_KEY_FILE)),
            checkpoint_interval_s=env.get(catalogue.AUDIT_CHECKPOINT_INTERVAL_S),
            feed_max_age_days=env.get(catalogue.AUDIT_FEED_MAX_AGE_DAYS),
        )
        env.done()
        return settings

    def open_chain(self, signer: Signer) -> SqlAuditChain:
        """The configured chain, signing with ``signer``: PostgreSQL when a DSN is set, else SQLite."""
        if self.postgres_dsn:
            return PostgresAuditChain(self.postgres_dsn, signer)
        assert self.database is not None
        return AuditChain(self.database, signer)


def postgres_dsn_problem(dsn: str, plaintext_allowed: bool) -> str:
    """Why a connection string is unusable or unsafe, or "" when it is fine.

    A network host needs sslmode=require or stronger: audit records carry case numbers and users.
    """
    try:
        options = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        return f"not a libpq connection string ({str(exc).splitlines()[0]})"
    hosts = [h for h in str(options.get("host", "")).split(",") if h]
    remote = [h for h in hosts if not h.startswith("/") and h not in ("localhost", "127.0.0.1", "::1")]
    if remote and options.get("sslmode") not in ("require", "verify-ca", "verify-full") and not plaintext_allowed:
        return (
            f"host {remote[0]} without sslmode=require, verify-ca or verify-full; "
            "or set CANDOR_AUDIT_POSTGRES_PLAINTEXT=allow behind a mesh that encrypts"
        )
    return ""

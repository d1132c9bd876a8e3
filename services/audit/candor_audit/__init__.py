"""Candor's audit service: an append-only, hash-chained, verifiable log of every event.

The records' format, hashing and verification are candor_kit.audit_records', their signatures
candor_kit.audit_signing's; this package stores them (SQLite or PostgreSQL) and serves them.
"""

from candor_audit.chain import AuditChain, PostgresAuditChain, SqlAuditChain
from candor_audit.service import QUERY_SUBJECT, VERIFY_SUBJECT, serve
from candor_audit.settings import AuditSettings

__all__ = [
    "QUERY_SUBJECT",
    "VERIFY_SUBJECT",
    "AuditChain",
    "AuditSettings",
    "PostgresAuditChain",
    "SqlAuditChain",
    "serve",
]

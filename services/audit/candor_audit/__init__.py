"""Candor's audit service: an append-only, hash-chained, verifiable log of every event."""

from candor_audit.chain import (
    AuditChain,
    AuditEntry,
    PostgresAuditChain,
    SqlAuditChain,
    StoredRecord,
    Verification,
    record_hash,
)
from candor_audit.service import QUERY_SUBJECT, VERIFY_SUBJECT, AuditSettings, serve

__all__ = [
    "QUERY_SUBJECT",
    "VERIFY_SUBJECT",
    "AuditChain",
    "AuditEntry",
    "AuditSettings",
    "PostgresAuditChain",
    "SqlAuditChain",
    "StoredRecord",
    "Verification",
    "record_hash",
    "serve",
]

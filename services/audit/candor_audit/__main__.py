"""``python -m candor_audit``."""

from candor_audit.service import AuditSettings, serve
from candor_kit import run_service

if __name__ == "__main__":
    run_service("audit", AuditSettings.from_env, serve)

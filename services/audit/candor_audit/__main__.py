"""``python -m candor_audit``."""

from candor_audit.service import serve
from candor_audit.settings import AuditSettings
from candor_kit import run_service

if __name__ == "__main__":
    run_service("audit", AuditSettings.from_env, serve)

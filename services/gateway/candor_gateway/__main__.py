"""``python -m candor_gateway``."""

from candor_gateway.service import GatewaySettings, serve
from candor_kit import run_service

if __name__ == "__main__":
    run_service("gateway", GatewaySettings.from_env, serve)

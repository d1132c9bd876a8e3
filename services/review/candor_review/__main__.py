"""``python -m candor_review``: serve the review desk until SIGTERM or SIGINT."""

from __future__ import annotations

import sys

import uvicorn

from candor_kit import ConfigError
from candor_kit.logging import configure_logging
from candor_kit.telemetry import configure_tracing
from candor_review.app import create_app
from candor_review.settings import ReviewSettings


def main() -> int:
    """Read the settings (refusing to start on a bad or unsafe one), then serve."""
    configure_logging("review")
    try:
        settings = ReviewSettings.from_env()
        configure_tracing("review")
    except ConfigError as exc:
        print(f"candor-review: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

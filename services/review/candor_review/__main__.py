"""``python -m candor_review``: serve the review desk (and its Prometheus metrics, where an
address is set) until SIGTERM or SIGINT."""

from __future__ import annotations

import sys

import structlog
import uvicorn

from candor_kit import ConfigError
from candor_kit.logging import configure_logging
from candor_kit.metrics import MetricsServer
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
    metrics = MetricsServer(settings.metrics_address) if settings.metrics_address else None
    if metrics is not None:
        port = metrics.start()
        structlog.get_logger("candor.review").info("metrics_listening", address=settings.metrics_address, port=port)
    try:
        uvicorn.Server(config).run()
    finally:
        if metrics is not None:
            metrics.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

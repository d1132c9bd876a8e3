"""structlog set-up: JSON lines off a terminal, and every line carries the current trace_id."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from opentelemetry import trace


def _add_trace_id(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    context = trace.get_current_span().get_span_context()
    event["trace_id"] = format(context.trace_id, "032x") if context.is_valid else None
    return event


def configure_logging(service: str, level: str = "info") -> None:
    """Route structlog to stderr: JSON unless stderr is a terminal, with service and trace_id."""
    renderer: Any = structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_id,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is when a line is written, not when logging was set up
    (a test's captured stream is closed after it; a redirected one replaced)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_command_logging() -> None:
    """For a command a person runs (``candor``, its worker processes): the libraries' log lines
    (a model loaded, say) go to stderr, so stdout carries the results alone."""
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(_CurrentStderr()))  # type: ignore[arg-type]

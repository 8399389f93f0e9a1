"""structlog: JSON lines when stdout is not a terminal, console output on one.

fusepy logs through the stdlib ``fuse`` logger; it is routed through the same
renderer so the daemon's output is one stream of one format.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(fmt: str = "auto") -> structlog.stdlib.BoundLogger:
    console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    renderer = structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    shared = [structlog.stdlib.add_log_level, structlog.processors.TimeStamper(fmt="iso")]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=shared))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("fuse").setLevel(logging.WARNING)
    return structlog.get_logger("migd")

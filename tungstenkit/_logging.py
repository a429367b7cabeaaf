"""Log levels and formatting shared by every process of ``tungsten serve``."""

from __future__ import annotations

import logging
import sys

#: Below DEBUG: one line per batch formed, per request.
TRACE = 5
LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

logging.addLevelName(TRACE, "TRACE")


def configure_logging(level: str, process: str) -> None:
    """Log to stderr with the process role in each line (``api``, ``worker``, ``serve``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s [{process}] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])

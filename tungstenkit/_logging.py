"""Log levels and formatting shared by every process of ``tungsten serve``.

Two formats: ``text`` (one human line per record) and ``json`` (one JSON object per
line, for log pipelines). JSON lines carry the process role, the pid, and, where the
code gave them, ``prediction_id``, ``prediction_ids``, ``batch_id``, ``job_id`` and the
``worker`` id (``add_log_context`` sets fields that go on every line of a process).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

#: Below DEBUG: one line per batch formed, per request.
TRACE = 5
LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("text", "json")
#: Attributes that log calls may pass with ``extra=`` and JSON lines then include.
CONTEXT_FIELDS = ("prediction_id", "prediction_ids", "batch_id", "batch_size", "job_id", "worker")

logging.addLevelName(TRACE, "TRACE")


class _Context(logging.Filter):
    """Adds the process's fixed fields (its worker id, say) to every record."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, Any] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in self.fields.items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, process, pid, logger, message, context."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "process": self._process,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(level: str, process: str, fmt: str = "text") -> None:
    """Log to stderr with the process role in each line (``api``, ``worker``, ``serve``, ``webhooks``)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter(process))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s [{process}] %(name)s: %(message)s"))
    handler.addFilter(_Context())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])


def add_log_context(**fields: Any) -> None:
    """Fields added to every later record of this process (in JSON lines)."""
    for handler in logging.getLogger().handlers:
        for found in handler.filters:
            if isinstance(found, _Context):
                found.fields.update(fields)

"""A bound on a worker's memory (``TUNGSTEN_WORKER_MAX_MEMORY_MB``).

A thread reads the process's resident memory many times a second; past the bound it
calls ``on_exceeded`` once, and the worker fails the running batch's predictions with a
message that says why and exits, so that its supervisor starts a fresh one (13.6: one
14 KB image took a worker to 8 GB, and the machine with it). Resident memory is
watched rather than bounded with ``RLIMIT_AS``: CUDA and torch reserve far more
address space than they use, and a ``MemoryError`` raised wherever an allocation
happens to fail could hit the worker's own threads instead of the model.

The model runs on the main thread and this thread needs the GIL to notice: code that
allocates in one long C call holding the GIL (rare: Pillow, numpy and torch release it
in their long loops) can overshoot the bound until it returns.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from tungstenkit._supervised_thread import FailureHandler, SupervisedThread

logger = logging.getLogger(__name__)

#: Seconds between two readings of the resident memory.
POLL_INTERVAL_S = 0.02
_STATM = Path("/proc/self/statm")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_mb() -> float | None:
    """This process's resident memory in MB (Linux), None where it cannot be read."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE_BYTES / 2**20
    except (OSError, ValueError, IndexError):
        return None


class MemoryGuard(SupervisedThread):
    """Calls ``on_exceeded(used_mb)`` once the process's resident memory passes ``limit_mb``."""

    def __init__(
        self, limit_mb: int, on_exceeded: Callable[[float], None], on_failure: FailureHandler | None = None
    ) -> None:
        super().__init__("tungsten-memory-guard", on_failure)
        self.limit_mb = limit_mb
        self._on_exceeded = on_exceeded
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def loop(self) -> None:
        if resident_mb() is None:
            logger.warning(
                "TUNGSTEN_WORKER_MAX_MEMORY_MB is set but this system does not show a process's memory; not enforced"
            )
            return
        while not self._halt.wait(POLL_INTERVAL_S):
            used = resident_mb()
            if used is not None and used > self.limit_mb:
                self._on_exceeded(used)
                return

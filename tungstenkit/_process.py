"""Child-process helpers shared by the supervisor and the Redis launcher."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[[int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved before any fork: the pre-exec hook must do as little as possible.
_prctl = _load_prctl()


def die_with_parent() -> None:
    """Pre-exec hook: the child gets SIGTERM when the process that started it dies.

    So a supervisor killed with SIGKILL leaves no orphan workers or Redis behind.
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def announce_ready(fd: int) -> None:
    """Tell the supervisor, on the pipe it gave us, that this child is ready."""
    try:
        os.write(fd, b"ready\n")
        os.close(fd)
    except OSError:
        pass
